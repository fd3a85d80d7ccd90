"""A hybrid layer pattern end to end through the CLI: train, test-model, chat, bench, and export refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.architecture_checks import check_the_commands_work_and_exports_are_refused
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

    check_the_commands_work_and_exports_are_refused(run, tmp_path, env, cache_check="Mamba-2 state",
                                                     refusal="model.layer_pattern = 'MA' has Mamba-2 layers")

    bad = run_cli("train", "--data", str(tiny_data), "--out", str(tmp_path / "bad"), "--max-steps", "1", "--quiet",
                  *sets, "--set", "model.layer_pattern=MAM", env=env)
    assert bad.returncode != 0 and "has 3 letters but model.n_layers = 2" in bad.stderr
    assert "Traceback" not in bad.stderr
