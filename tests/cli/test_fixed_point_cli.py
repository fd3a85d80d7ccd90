"""model.arch = fixed_point end to end through the CLI: train both phases, test-model, chat, bench, export refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.architecture_checks import check_the_commands_work_and_exports_are_refused
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

    check_the_commands_work_and_exports_are_refused(run, tmp_path, env, cache_check="context cache equals full forward",
                                                     refusal="model.arch = fixed_point")

    bad = run_cli("train", "--data", str(tiny_data), "--out", str(tmp_path / "bad"), "--max-steps", "1", *sets,
                  "--set", "model.layer_pattern=MA", env=env)
    assert bad.returncode != 0 and "leave it empty with model.arch = fixed_point" in bad.stderr
    assert "Traceback" not in bad.stderr
