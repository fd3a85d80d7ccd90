"""What every model architecture must do through the CLI once trained: check, chat, bench, refuse the exports."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def check_the_commands_work_and_exports_are_refused(run: Path, tmp_path: Path, env: dict[str, str],
                                                     cache_check: str, refusal: str) -> None:
    checked = run_cli("test-model", str(run), env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert cache_check in checked.stdout

    chat = run_cli("chat", str(run), "--prompt", "hi", "--json", "--max-new-tokens", "8", "--temperature", "0",
                   env=env)  # greedy: the same reply every run (a sampled one could end at its first token)
    assert chat.returncode == 0, chat.stderr
    assert json.loads(chat.stdout)["generated_tokens"] > 0

    bench = run_cli("bench", str(run), "-p", "32", "-n", "16", "-r", "1", "--json", env=env)
    assert bench.returncode == 0, bench.stderr
    assert {test["test"] for test in json.loads(bench.stdout)["tests"]} == {"pp32", "tg16"}

    for export_format, out in (("hf", tmp_path / "hf"), ("gguf", tmp_path / "model.gguf")):
        refused = run_cli("export", str(run), "--format", export_format, "--out", str(out), env=env)
        assert refused.returncode != 0
        assert refusal in refused.stderr
        assert "Traceback" not in refused.stderr and not out.exists()
