"""Setup's checks before the first step: validation turns off with a note rather than failing at the first eval."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.errors import CogniError
from cognimamba.train.entry import TrainOptions, train
from cognimamba.train.setup import validation_windows, window_fit_note
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def chat_data(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> DataDir:
    out = tmp_path_factory.mktemp("chat") / "tools"
    prepare_chat(ChatPrepareOptions([MixEntry("synthetic-tools", count=30)], tiny_data / "tokenizer.json", out=out,
                                    val_fraction=0.2), Console(quiet=True))
    return DataDir.open(out)


def test_validation_is_off_with_a_note_when_no_held_out_conversation_fits(chat_data: DataDir) -> None:
    windows, note = validation_windows(chat_data, tiny_config("model.max_seq_len=64"))
    assert windows is None and "validation off: no held-out conversation fits the 64-token context" in note
    windows, note = validation_windows(chat_data, tiny_config("model.max_seq_len=1536"))
    assert windows is not None and note == ""


def test_the_header_counts_how_chat_conversations_fit(chat_data: DataDir, tiny_data: Path) -> None:
    note = window_fit_note(TokenWindows(chat_data, "train"), 512)
    assert "conversations" in note and "skipped" in note
    assert window_fit_note(TokenWindows(DataDir.open(tiny_data), "train"), 64) == ""


@pytest.mark.parametrize("chat_windows", ["conversations", "random"])
def test_no_conversation_fitting_the_context_fails_before_training_in_both_modes(
        chat_data: DataDir, tmp_path: Path, chat_windows: str) -> None:
    """Random offsets would train, but validation reads whole conversations: a run without one would end
    with no val rows, no best/ and best_val_loss null; both modes stop at setup with one line instead."""
    config = tiny_config("model.max_seq_len=64", "train.max_steps=2", f"data.chat_windows={chat_windows}")
    with pytest.raises(CogniError, match=r"no conversation fits a window of 64 tokens.*model\.max_seq_len"):
        train(TrainOptions(config=config, data=chat_data.path, out=tmp_path / "run", show_progress=False),
              Console(quiet=True))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
