"""The server on a free loopback port, in a thread of this process: for tools that speak only HTTP (BFCL's
harness through `cogni eval --bfcl`) to reach a run without a separate `cogni serve`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from cognimamba.errors import CogniError
from cognimamba.serve.app import create_app
from cognimamba.serve.engine import ServedModel
from cognimamba.serve.state import ServerSettings

START_SECONDS = 30


@contextmanager
def serving_locally(model: ServedModel, settings: ServerSettings | None = None,
                    start_seconds: float = START_SECONDS) -> Iterator[str]:
    """Yields the base URL (`http://127.0.0.1:PORT`, without /v1) while the server runs; stops it afterwards.

    The socket is bound here, before uvicorn starts, so no other process can take the port in between.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model, settings), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True, name="cogni-serve")
    thread.start()
    deadline = time.monotonic() + start_seconds
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise CogniError(f"the in-process server on 127.0.0.1:{port} did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()
