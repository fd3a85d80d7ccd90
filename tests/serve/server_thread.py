"""A real uvicorn server on a free port in a background thread (the one `cogni eval --bfcl` uses), for tests that
talk HTTP to it."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from cognimamba.serve.engine import ServedModel
from cognimamba.serve.local_server import serving_locally
from cognimamba.serve.state import ServerSettings


def running_server(model: ServedModel, settings: ServerSettings | None = None) -> AbstractContextManager[str]:
    """Yields the base URL (`http://127.0.0.1:PORT`) while the server runs; stops it afterwards."""
    return serving_locally(model, settings, start_seconds=20)


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
