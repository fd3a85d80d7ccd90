"""`cogni serve RUN`: the model behind an OpenAI-compatible HTTP API (needs the `serve` extra)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from cognimamba.errors import CogniError

SERVE_EXTRA_HINT = "`cogni serve` needs FastAPI and uvicorn: pip install 'cognimamba[serve]'"


def serve_command(
    run: Annotated[Path, typer.Argument(help="run dir (from `cogni train` or `cogni quickstart`)")],
    host: Annotated[str, typer.Option("--host", help="address to listen on; 0.0.0.0 opens it to the network")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port")] = 8000,
    api_key: Annotated[str | None, typer.Option("--api-key", help="require 'Authorization: Bearer KEY' on /v1/*")] = None,
    api_key_file: Annotated[Path | None, typer.Option("--api-key-file", help="read the key from this file (keeps it out of `ps`)")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option("--cors-origin", help="let web pages from this origin call the API (repeatable; '*' for any)")] = None,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1, help="requests admitted at once, decoding in a slot or waiting for one; more get HTTP 429 (--parallel sets the slots)")] = 16,
    max_concurrency: Annotated[int | None, typer.Option("--max-concurrency", min=1, hidden=True, help="the old name of --queue-size")] = None,
    parallel: Annotated[int | None, typer.Option("--parallel", min=1, help="replies decoded at once, each in its own slot of the KV cache (continuous batching); default: up to 8, as the model's cache fits a quarter of the memory")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="the model id clients send (default: the run dir's name)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the decoding steps before serving; default: on CPU for models of 2M parameters or more, where it pays back over a server's life (it takes 30-60 s at start)")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="fp32, bf16 (weights only on CPUs without native bf16) or int8 (needs torchao); default: the run's inference.weights")] = None,
) -> None:
    """Serve a trained model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions) and a chat page at /."""
    try:  # the optional dependency stays optional: everything else works without it
        import uvicorn

        from cognimamba.serve.app import create_app
    except ImportError:
        raise CogniError(SERVE_EXTRA_HINT, exit_code=1) from None
    from cognimamba.runs.layout import check_run_path
    from cognimamba.runs.loading import check_run
    from cognimamba.serve.engine import load_served_model
    from cognimamba.serve.state import ServerSettings

    if api_key is not None and api_key_file is not None:
        raise CogniError("--api-key and --api-key-file do not go together; give one")
    key = read_api_key(api_key_file) if api_key_file is not None else api_key
    if key is not None and not key.strip():
        raise CogniError("--api-key: the key is empty")
    check_run_path(run)  # a wrong path is one clear line, then the run's files are checked
    check_run(run)
    configure_logging()
    model = load_served_model(run, device, model_name, compile, weights, parallel)
    settings = ServerSettings(api_key=key, cors_origins=list(cors_origin or []),
                              max_concurrency=queue_size if max_concurrency is None else max_concurrency)
    if model.compiled_in is not None:
        typer.echo(f"decoding steps compiled in {model.compiled_in:.1f} s (torch.compile; --no-compile skips it)",
                   err=True)
    typer.echo(f"serving {model.name!r} (context {model.context_length} tokens, {model.parallel} parallel "
               f"slot{'s' if model.parallel > 1 else ''}): API at http://{host}:{port}/v1"
               f"{' (API key required)' if key else ''}, chat page at http://{host}:{port}/; Ctrl+C stops", err=True)
    uvicorn.run(create_app(model, settings), host=host, port=port, log_level="warning", access_log=False)


def read_api_key(path: Path) -> str:
    if not path.is_file():
        raise CogniError(f"--api-key-file {path}: file not found")
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise CogniError(f"--api-key-file {path}: the file is empty")
    return key


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged, not the stream it was made with (which a caller
    that ran the command in-process, a test's capture say, may have closed since)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging() -> None:
    """The server's one line per request goes to stderr with a timestamp (one handler, however often called)."""
    logger = logging.getLogger("cognimamba.serve")
    if not any(isinstance(handler, StderrHandler) for handler in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
