"""A run's ChatModel in a child process: the same replies as in process, cancel, stats, and errors as one line."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.decoding import ChatModel
from cognimamba.inference.model_process import LoadRequest, ModelProcess
from cognimamba.runs.loading import load_run

pytestmark = pytest.mark.slow  # each test starts a child process that imports torch

PROMPT = "Once upon a time"
GREEDY = GenerationConfig(temperature=0.0, max_new_tokens=40)


@pytest.fixture(scope="module")
def served(tiny_run: Path) -> Iterator[ModelProcess]:
    with ModelProcess(LoadRequest(tiny_run, device="cpu")) as model:
        yield model
    assert not model.running


def test_streams_the_same_greedy_reply_and_stats_as_in_process(served: ModelProcess, tiny_run: Path):
    local = ChatModel.from_run(load_run(tiny_run))
    local.top_alternatives = served.top_alternatives = 3
    try:
        expected = "".join(local.stream(PROMPT, GREEDY))
        assert "".join(served.stream(PROMPT, GREEDY)) == expected
    finally:
        served.top_alternatives = 0
    assert (served.name, served.context_length, served.defaults) == (local.name, 64, local.defaults)
    assert served.count_tokens(PROMPT) == local.count_tokens(PROMPT) == served.stats.prompt_tokens
    stats = served.stats
    assert stats.generated_tokens == local.stats.generated_tokens and stats.stop_reason == local.stats.stop_reason
    assert stats.tokens_per_second > 0
    assert [choice.token for choice in stats.token_choices] == [choice.token for choice in local.stats.token_choices]
    assert len(stats.token_choices[0].alternatives) == 3


def test_cancel_stops_a_long_reply_within_a_few_tokens(served: ModelProcess):
    full = "".join(served.stream(PROMPT, GREEDY))
    full_tokens = served.stats.generated_tokens
    assert full and full_tokens >= 20, "the tiny run's greedy reply should run long for this test"
    cancel = threading.Event()
    for _ in served.stream(PROMPT, GREEDY, cancel):
        cancel.set()  # Esc as the first text arrives
    assert served.stats.stop_reason == "cancelled"
    assert served.stats.generated_tokens < full_tokens


def test_a_reply_left_half_read_leaves_the_next_one_intact(served: ModelProcess):
    expected = "".join(served.stream(PROMPT, GREEDY))
    deltas = served.stream(PROMPT, GREEDY)
    next(deltas)
    deltas.close()  # the reader stops early: the child is stopped and its pipe read to the end
    assert "".join(served.stream(PROMPT, GREEDY)) == expected


def test_a_bad_run_is_the_same_one_line_error_as_in_process(tmp_path: Path):
    with pytest.raises(CogniError) as in_process:
        load_run(tmp_path / "missing")
    with pytest.raises(CogniError) as from_child:
        ModelProcess(LoadRequest(tmp_path / "missing"))
    assert str(from_child.value) == str(in_process.value) and "\n" not in str(from_child.value)


def test_a_child_that_dies_is_one_line_not_a_hang(tiny_run: Path):
    model = ModelProcess(LoadRequest(tiny_run, device="cpu"))
    assert model.pid is not None
    os.kill(model.pid, signal.SIGKILL)
    with pytest.raises(CogniError, match="the model process ended unexpectedly"):
        "".join(model.stream(PROMPT, GREEDY))
    model.close()
