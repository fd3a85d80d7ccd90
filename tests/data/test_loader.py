"""Training windows: random offsets for text; for chat, whole conversations from a conversation start."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.errors import CogniError
from cognimamba.model.loss import IGNORE_INDEX
from cognimamba.model.tokenizer import END_OF_TEXT, IM_START, decode, load_tokenizer

CLOCK = {"name": "clock", "description": "The time",
         "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}


def conversation(number: int, turns: int) -> dict:
    """A system turn with a tool, then `turns` user/assistant exchanges."""
    messages = [{"role": "system", "content": f"You are bot {number}."}]
    for turn in range(turns):
        messages += [{"role": "user", "content": f"question {number}.{turn}?"},
                     {"role": "assistant", "content": f"answer {number}.{turn}."}]
    return {"messages": messages, "tools": [CLOCK]}


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> DataDir:
    """Forty short conversations and every tenth a long one (twelve exchanges)."""
    folder = tmp_path_factory.mktemp("chat")
    records = [conversation(number, 12 if number % 10 == 0 else 1 + number % 3) for number in range(40)]
    source = folder / "chat.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    result = prepare_chat(ChatPrepareOptions([MixEntry(str(source))], tiny_data / "tokenizer.json",
                                             val_fraction=0.0, out=folder / "data"))
    return result.data_dir


def window_texts(data: DataDir, inputs: np.ndarray) -> list[str]:
    tokenizer = load_tokenizer(data.tokenizer_path)
    return [decode(tokenizer, row.tolist()) for row in inputs]


def conversations_in(text: str) -> list[str]:
    """The conversations of a window's text (padding after the last one dropped)."""
    return [piece for piece in text.split(END_OF_TEXT) if piece]


def test_windows_start_at_a_conversation_start_and_keep_the_system_turn(chat_data: DataDir) -> None:
    windows = TokenWindows(chat_data, "train", seed=3)
    assert windows.aligned
    for step in range(5):
        inputs, _ = windows.random_batch(step, 0, batch_size=4, seq_len=400)
        assert inputs.shape == (4, 400)
        for text in window_texts(chat_data, inputs.numpy()):
            pieces = conversations_in(text)
            assert pieces, text
            for piece in pieces:  # no window starts mid-conversation; every conversation has its system turn
                assert piece.startswith(f"{IM_START}system\nYou are bot "), piece[:60]
                assert "<tools>" in piece


def test_long_conversations_keep_the_system_turn_and_drop_oldest_turns(chat_data: DataDir) -> None:
    windows = TokenWindows(chat_data, "train")
    fit = windows.alignment(400)
    assert fit is not None and fit.conversations == 40 and fit.trimmed == 4 and fit.skipped == 0
    texts = [text for inputs, _ in windows.full_pass(batch_size=8, seq_len=400)
             for text in window_texts(chat_data, inputs.numpy())]
    long_ones = [piece for text in texts for piece in conversations_in(text) if piece.startswith(
        f"{IM_START}system\nYou are bot 10.")]
    assert len(long_ones) == 1
    kept = long_ones[0]
    assert "question 10.11?" in kept and "question 10.0?" not in kept  # the newest turns stay, oldest go
    assert kept.count(f"{IM_START}user") == kept.count(f"{IM_START}assistant")  # only whole turns


def test_full_pass_trains_exactly_the_masked_tokens_of_whole_conversations(chat_data: DataDir) -> None:
    """With room for every conversation, the loss mask reaches the windows unchanged."""
    tokens, mask = np.asarray(chat_data.tokens("train")), np.asarray(chat_data.mask("train"))
    windows = TokenWindows(chat_data, "train")
    assert windows.alignment(1024).trimmed == 0
    trained = [targets[targets != IGNORE_INDEX] for _, targets in windows.full_pass(batch_size=2, seq_len=1024)]
    assert np.array_equal(np.concatenate([t.numpy() for t in trained]), tokens[mask.astype(bool)])
    for inputs, targets in windows.full_pass(batch_size=2, seq_len=1024):
        assert (targets[inputs == chat_data.end_of_text_id] == IGNORE_INDEX).all()  # padding is never trained


def test_windows_are_a_function_of_seed_and_step(chat_data: DataDir) -> None:
    first = TokenWindows(chat_data, "train", seed=1).random_batch(7, 1, 4, 400)
    again = TokenWindows(chat_data, "train", seed=1).random_batch(7, 1, 4, 400)
    other = TokenWindows(chat_data, "train", seed=2).random_batch(7, 1, 4, 400)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_eval_windows_are_aligned_and_the_same_every_time(chat_data: DataDir) -> None:
    windows = TokenWindows(chat_data, "train")
    batches = list(windows.eval_batches(2, 3, 400))
    assert [b[0].shape[0] for b in batches] == [3, 3]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, windows.eval_batches(2, 3, 400), strict=True))
    for inputs, _ in batches:
        for text in window_texts(chat_data, inputs.numpy()):
            assert text.startswith(f"{IM_START}system\n")


def test_counts_over_common_contexts_are_in_meta(chat_data: DataDir) -> None:
    over = chat_data.meta["train_conversations_over_context"]
    assert set(over) == {"256", "512", "1024", "2048", "4096"}
    assert over["4096"] == {"trimmed": 0, "skipped": 0}


def test_a_window_too_small_for_any_conversation_is_one_clear_error(chat_data: DataDir) -> None:
    with pytest.raises(CogniError, match=r"no conversation fits a window of 8 tokens.*model\.max_seq_len"):
        TokenWindows(chat_data, "train").check_fits(8)


def test_random_chat_windows_still_need_a_conversation_that_fits_for_evaluation(chat_data: DataDir) -> None:
    """Evaluation reads whole conversations in both modes: with none fitting, data.chat_windows = random
    would train on and never validate; it fails with the default mode's error instead."""
    with pytest.raises(CogniError, match=r"no conversation fits a window of 8 tokens.*model\.max_seq_len"):
        list(TokenWindows(chat_data, "train", random_offsets=True).eval_batches(2, 3, 8))


def test_chat_dirs_from_before_conversation_offsets_ask_for_prepare(chat_data: DataDir) -> None:
    old = DataDir(chat_data.path, {**chat_data.meta, "chat_data_version": 1})
    with pytest.raises(CogniError, match=r"older cogni.*run `cogni prepare` again"):
        TokenWindows(old, "train")


def test_random_chat_windows_start_mid_conversation_and_keep_the_mask(chat_data: DataDir) -> None:
    """data.chat_windows = random, the ablation: windows at any offset, trained only on assistant tokens."""
    windows = TokenWindows(chat_data, "train", seed=3, random_offsets=True)
    assert not windows.aligned
    inputs, targets = windows.random_batch(0, 0, batch_size=16, seq_len=64)
    texts = window_texts(chat_data, inputs.numpy())
    assert any(not text.startswith(f"{IM_START}system") for text in texts)
    mask = chat_data.mask("train")
    tokens = chat_data.tokens("train")
    for row, target in zip(inputs.numpy(), targets.numpy(), strict=True):
        offsets = [start for start in range(len(tokens) - 64) if np.array_equal(tokens[start:start + 64], row)]
        assert offsets, "a window is a slice of the token stream"
        trained = mask[offsets[0] + 1:offsets[0] + 65].astype(bool)
        assert np.array_equal(target != IGNORE_INDEX, trained)


def test_text_windows_still_start_anywhere(tiny_data: Path) -> None:
    data = DataDir.open(tiny_data)
    windows = TokenWindows(data, "train", seed=0)
    assert not windows.aligned and windows.alignment(64) is None
    inputs, targets = windows.random_batch(0, 0, 8, 64)
    assert np.array_equal(inputs[:, 1:], targets[:, :-1])
    end = load_tokenizer(data.tokenizer_path).token_to_id(END_OF_TEXT)
    assert (inputs[:, 0] != end).any()
