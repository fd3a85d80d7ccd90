"""model.arch = fixed_point end to end through the CLI: train both phases, test-model, chat, bench, export refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, run_cli


@pytest.mark.slow
def test_fixed_point_model_trains_chats_benches_and_refuses_export(tiny_data: Path, tmp_path: Path) -> None:
    env = {"COGNI_HOME": str(tmp_path / "home")}
    run = tmp_path / "fixed_point"
    settings = [*TINY_MODEL, "model.arch=fixed_point", "model.fixed_point_preset=small",
                "model.fixed_point_context_dim=32", "model.fixed_point_hidden_dim=64", "train.eval_every=0",
                "train.save_every=0"]
    sets = [arg for item in settings for arg in ("--set", item)]
    trained = run_cli("train", "--data", str(tiny_data), "--out", str(run), "--max-steps", "6", *sets, env=env)
    assert trained.returncode == 0, trained.stderr
    assert "phase 1/2" in trained.stdout + trained.stderr and "phase 2/2" in trained.stdout + trained.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("convergence_rate" in row and "mean_iterations" in row for row in rows)
    assert any(row.get("phase") == 2 and "phase1_convergence_rate" in row for row in rows)
    assert (run / "fixed_point_contexts.safetensors").is_file()

    checked = run_cli("test-model", str(run), env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "context cache equals full forward" in checked.stdout

    chat = run_cli("chat", str(run), "--prompt", "hi", "--json", "--max-new-tokens", "8", env=env)
    assert chat.returncode == 0, chat.stderr
    assert json.loads(chat.stdout)["generated_tokens"] > 0

    bench = run_cli("bench", str(run), "-p", "32", "-n", "16", "-r", "1", "--json", env=env)
    assert bench.returncode == 0, bench.stderr
    assert {test["test"] for test in json.loads(bench.stdout)["tests"]} == {"pp32", "tg16"}

    for export_format, out in (("hf", tmp_path / "hf"), ("gguf", tmp_path / "model.gguf")):
        refused = run_cli("export", str(run), "--format", export_format, "--out", str(out), env=env)
        assert refused.returncode != 0
        assert "model.arch = fixed_point" in refused.stderr
        assert "Traceback" not in refused.stderr and not out.exists()

    bad = run_cli("train", "--data", str(tiny_data), "--out", str(tmp_path / "bad"), "--max-steps", "1", *sets,
                  "--set", "model.layer_pattern=MA", env=env)
    assert bad.returncode != 0 and "leave it empty with model.arch = fixed_point" in bad.stderr
    assert "Traceback" not in bad.stderr
