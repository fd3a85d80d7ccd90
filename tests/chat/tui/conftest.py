"""Chat app tests see every chat as last active at one fixed moment, so snapshots do not change with the clock."""

from __future__ import annotations

import dataclasses
import time

import pytest

from cognimamba.chat.tui import sidebar

FIXED_TIME = 1_700_000_000.0  # 2023-11-14


@pytest.fixture(autouse=True)
def fixed_chat_dates(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    real = sidebar.chat_when
    monkeypatch.setattr(sidebar, "chat_when",
                        lambda record, now=None: real(dataclasses.replace(record, updated_at=FIXED_TIME), FIXED_TIME))
    yield
    monkeypatch.undo()
    time.tzset()
