"""`cogni serve` as users run it, and `cogni chat --url` against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from openai import OpenAI

from cognimamba.cli.app import main
from tests.conftest import run_cli


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cogni", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def test_serve_without_the_extra_names_the_pip_command(monkeypatch, capsys, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    code, err = run_main(monkeypatch, capsys, "serve", str(tmp_path))
    assert code == 1 and "pip install 'cognimamba[serve]'" in err and len(err.strip().splitlines()) == 1


def test_queue_size_bounds_the_admitted_requests_and_the_old_name_still_works(monkeypatch, capsys, tmp_path: Path):
    admitted = []
    monkeypatch.setattr("cognimamba.runs.layout.check_run_path", lambda run: run)
    monkeypatch.setattr("cognimamba.runs.loading.check_run", lambda run: run)
    monkeypatch.setattr("cognimamba.serve.engine.load_served_model",
                        lambda *args: SimpleNamespace(name="m", context_length=64, parallel=2, compiled_in=None))
    monkeypatch.setattr("cognimamba.serve.app.create_app",
                        lambda model, settings: admitted.append(settings.max_concurrency))
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)
    for option, expected in (([], 16), (["--queue-size", "5"], 5), (["--max-concurrency", "7"], 7)):
        code, err = run_main(monkeypatch, capsys, "serve", str(tmp_path), *option)
        assert code == 0, err
        assert admitted.pop() == expected
    monkeypatch.setattr(sys, "argv", ["cogni", "serve", "--help"])
    with pytest.raises(SystemExit):
        main()
    shown = capsys.readouterr().out
    assert "--queue-size" in shown and "--max-concurrency" not in shown  # the old name is hidden


def test_chat_takes_a_run_or_a_url(monkeypatch, capsys, tmp_path: Path):
    for args in (["chat"], ["chat", str(tmp_path), "--url", "http://127.0.0.1:9/v1"]):
        code, err = run_main(monkeypatch, capsys, *args)
        assert code == 2 and "give either a RUN dir or --url" in err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_serve_answers_the_openai_client_and_chat_url(tiny_run: Path, tmp_path: Path):
    port = free_port()
    key_file = tmp_path / "key"
    key_file.write_text("sk-local\n")
    server = subprocess.Popen([sys.executable, "-m", "cognimamba", "serve", str(tiny_run), "--port", str(port),
                               "--api-key-file", str(key_file), "--model-name", "tiny"],
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        api = OpenAI(base_url=f"{url}/v1", api_key="sk-local", max_retries=0)
        assert [model.id for model in api.models.list().data] == ["tiny"]
        result = run_cli("chat", "--url", f"{url}/v1", "--api-key", "sk-local", "--prompt", "Once upon a time",
                         "--max-new-tokens", "5", "--json")
        assert result.returncode == 0, result.stderr
        assert 0 < json.loads(result.stdout)["generated_tokens"] <= 5  # the server's usage
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1]
    assert "serving 'tiny'" in log and "(API key required)" in log
    assert "GET /v1/models 200" in log and "POST /v1/chat/completions 200 tokens" in log


def test_the_request_log_goes_once_to_the_stderr_of_the_moment(capsys):
    """Run in-process twice (as these tests do), the server's log neither doubles nor writes to a closed capture."""
    import logging

    from cognimamba.cli.commands.serve import configure_logging

    configure_logging()
    configure_logging()
    logging.getLogger("cognimamba.serve").info("GET /health 200")
    assert capsys.readouterr().err.count("GET /health 200") == 1
