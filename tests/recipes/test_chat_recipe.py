"""`cogni recipe chat` end to end on tiny stages: killed mid-pretraining, the same command continues where it
stopped (done stages are skipped, the stopped one resumes), and a finished recipe does nothing again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cognimamba.config.profiles import budget_cpu_precision
from tests.conftest import TINY_MODEL, run_cli

TINY_RECIPE = """
profile = "cpu"
budget = "2m"

[tokenizer]
vocab_size = 512
sample_chars = 200000

[pretrain]
sources = ["{corpus}"]
share = 0.4
settings = {pretrain_settings}

[chat]
sources = ["synthetic-tools@0.5", "synthetic-chat@0.5"]
synthetic_count = 30
val_fraction = 0.1
share = 0.4
settings = ["train.max_steps=3", "train.eval_every=3", "train.save_every=3", "train.eval_batches=1",
            "train.log_every=1"]

[eval]
conversations = 2
"""


@pytest.fixture
def recipe(tiny_corpus: Path, tmp_path: Path) -> Path:
    # The profile's own precision (TINY_MODEL pins fp32 for the other tests): a recipe trains in what it picks.
    tiny = [setting for setting in TINY_MODEL if not setting.startswith("train.precision=")]
    settings = [*tiny, "train.max_steps=6", "train.save_every=3", "train.eval_every=3"]
    path = tmp_path / "tiny_recipe.toml"
    path.write_text(TINY_RECIPE.format(corpus=tiny_corpus, pretrain_settings=json.dumps(settings)))
    return path


@pytest.mark.slow
def test_an_interrupted_recipe_continues_where_it_stopped(recipe: Path, tmp_path: Path, cogni_home: Path) -> None:
    out = tmp_path / "out"
    command = ["recipe", "chat", "--recipe", str(recipe), "--out", str(out), "--quiet"]
    env = {"COGNI_HOME": str(cogni_home)}
    killed = run_cli(*command, env={**env, "COGNI_FAULT": "kill-after-step@5"})  # checkpoint at 3, killed at 5
    assert killed.returncode != 0
    state = json.loads((out / "recipe.json").read_text())
    assert state["done"] == ["tokenizer", "data"]
    tokenizer_written = (out / "tokenizer.json").stat().st_mtime_ns

    continued = run_cli(*command, env=env)
    assert continued.returncode == 0, continued.stderr
    log = continued.stderr
    assert "1/5 tokenizer on pretraining text and chat data: done already, skipped" in log
    assert "2/5 data dirs: done already, skipped" in log
    assert "3/5 pretraining (resuming from its checkpoint)" in log
    assert (out / "tokenizer.json").stat().st_mtime_ns == tokenizer_written
    chosen = json.loads((out / "chat" / "config.json").read_text())["finetune_defaults"]
    assert chosen["model.max_seq_len"] > 64  # the recipe left the chat context to the fine-tuning defaults
    for figure in ("pretraining val bits/byte", "chat val loss", "turn-taking", "right tool", "no false call"):
        assert figure in log
    assert f"cogni chat {out / 'chat'} --enable-tools" in log
    state = json.loads((out / "recipe.json").read_text())
    assert state["done"] == ["tokenizer", "data", "pretrain", "chat", "eval"]
    assert state["figures"]["pretrain"]["steps"] == 6 and state["figures"]["chat"]["steps"] == 3
    assert json.loads((out / "base" / "trainer_state.json").read_text())["step"] == 6
    report = (out / "report.md").read_text()  # the recipe's report card: one section per stage, with its time
    assert "## 3. Pretraining (" in report and "## 5. Chat eval on held-out conversations (" in report
    assert all("wall_seconds" in figures for figures in state["figures"].values())
    # The cpu profile trains bf16 where this CPU computes it natively (fp32 elsewhere).
    for stage in ("base", "chat"):
        assert json.loads((out / stage / "config.json").read_text())["train"]["precision"] == budget_cpu_precision()

    base_weights = (out / "base" / "model.safetensors").stat().st_mtime_ns
    again = run_cli(*command, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("done already, skipped") == 5
    assert (out / "base" / "model.safetensors").stat().st_mtime_ns == base_weights
