"""`cogni quickstart --chat`: offline, from nothing to a chat run with its chat eval and the command to talk to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_chat_quickstart_trains_evaluates_and_prints_the_chat_command(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {"COGNI_HOME": str(tmp_path / "home")}
    result = run_cli("quickstart", "--chat", "--max-time", "15s", "--conversations", "300",
                     "--eval-conversations", "3", "--out", str(run), env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"cogni chat {run} --enable-tools" in result.stderr
    assert "turn-taking" in result.stderr and "parse" in result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["max_seq_len"] == 512  # room for the tool definitions and a few turns
    assert config["data_meta"]["sources"][0]["label"] == "synthetic-chat"
    report = (run / "report.md").read_text()  # the report card, with the chat eval saved beside the run for it
    assert "| turn-taking |" in report and "## Sample (greedy, chat)" in report
    # The printed check command works as printed.
    held_out = next((Path(tmp_path / "home") / "cache" / "quickstart").glob("chat-held-out-*.jsonl"))
    checked = run_cli("test-model", str(run), "--chat-eval", str(held_out), "--json", env=env)
    assert checked.returncode in (0, 1), checked.stderr
    assert json.loads(checked.stdout)["chat_eval"]["conversations"] == 3


@pytest.mark.slow
def test_chat_and_data_do_not_go_together(tmp_path: Path) -> None:
    result = run_cli("quickstart", "--chat", "--data", "x.txt", env={"COGNI_HOME": str(tmp_path)})
    assert result.returncode != 0 and "--data and --chat" in result.stderr and "Traceback" not in result.stderr
