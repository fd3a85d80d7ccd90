"""Servers for tests/serve: the tiny real model, and a scripted one whose replies the test chooses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cognimamba.serve.engine import ServedModel, load_served_model
from tests.serve.server_thread import running_server


@pytest.fixture(scope="module")
def tiny_model(tiny_run: Path) -> ServedModel:
    return load_served_model(tiny_run, "cpu", name="tiny")


@pytest.fixture(scope="module")
def tiny_server(tiny_model: ServedModel) -> Iterator[str]:
    """The tiny trained model served at this base URL (without /v1)."""
    with running_server(tiny_model) as url:
        yield url
