"""A hybrid layer pattern end to end through the CLI: train, test-model, chat, bench, and export refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL, run_cli


@pytest.mark.slow
def test_hybrid_pattern_trains_chats_benches_and_refuses_export(tiny_data: Path, tmp_path: Path) -> None:
    env = {"COGNI_HOME": str(tmp_path / "home")}
    run = tmp_path / "hybrid"
    settings = [*TINY_MODEL, "model.layer_pattern=MA", "model.mamba_head_dim=16", "model.mamba_state_size=16"]
    sets = [arg for item in settings for arg in ("--set", item)]
    trained = run_cli("train", "--data", str(tiny_data), "--out", str(run), "--max-steps", "10", "--quiet", *sets,
                      env=env)
    assert trained.returncode == 0, trained.stderr

    checked = run_cli("test-model", str(run), env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Mamba-2 state" in checked.stdout

    chat = run_cli("chat", str(run), "--prompt", "hi", "--json", "--max-new-tokens", "8", env=env)
    assert chat.returncode == 0, chat.stderr
    assert json.loads(chat.stdout)["generated_tokens"] > 0

    bench = run_cli("bench", str(run), "-p", "32", "-n", "16", "-r", "1", "--json", env=env)
    assert bench.returncode == 0, bench.stderr
    assert {test["test"] for test in json.loads(bench.stdout)["tests"]} == {"pp32", "tg16"}

    for export_format, out in (("hf", tmp_path / "hf"), ("gguf", tmp_path / "model.gguf")):
        refused = run_cli("export", str(run), "--format", export_format, "--out", str(out), env=env)
        assert refused.returncode != 0
        assert "model.layer_pattern = 'MA' has Mamba-2 layers" in refused.stderr
        assert "Traceback" not in refused.stderr and not out.exists()

    bad = run_cli("train", "--data", str(tiny_data), "--out", str(tmp_path / "bad"), "--max-steps", "1", "--quiet",
                  *sets, "--set", "model.layer_pattern=MAM", env=env)
    assert bad.returncode != 0 and "has 3 letters but model.n_layers = 2" in bad.stderr
    assert "Traceback" not in bad.stderr
