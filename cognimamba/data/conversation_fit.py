"""Which tokens of a conversation a training window keeps: the rule chat uses when the context is full.

A conversation is its head (the system turn with the tools, everything before the first user turn) and
then whole turns, each starting at a user message. One that fits the window is kept whole. A longer one
keeps its head and drops whole oldest turns until the rest fits, so a trained reply always sees the
tools it may call; one whose head and last turn alone exceed the window is skipped. Training windows and
`cogni prepare`'s counts both use this one rule (numpy only, so prepare does not import torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKIPPED = -1
REPORTED_CONTEXTS = (256, 512, 1024, 2048, 4096)  # the counts `cogni prepare` writes into meta.json


@dataclass(frozen=True)
class ConversationBounds:
    """Token offsets into a split's stream: each conversation's start, end, and where its head ends."""

    starts: np.ndarray  # int64 [conversations]
    ends: np.ndarray  # int64 [conversations], exclusive (the trailing <|endoftext|> included)
    head_ends: np.ndarray  # int64 [conversations]: the first user turn, or the end when there is none
    turn_starts: np.ndarray  # int64 [turns], sorted: every user turn of every conversation

    @classmethod
    def from_offsets(cls, starts: np.ndarray, turn_starts: np.ndarray, total_tokens: int) -> ConversationBounds:
        starts = np.asarray(starts, dtype=np.int64)
        turn_starts = np.asarray(turn_starts, dtype=np.int64)
        ends = np.append(starts[1:], np.int64(total_tokens))
        first_turn = np.searchsorted(turn_starts, starts, side="left")
        candidate = turn_starts[np.minimum(first_turn, max(len(turn_starts) - 1, 0))] if len(turn_starts) else ends
        head_ends = np.where((first_turn < len(turn_starts)) & (candidate < ends), candidate, ends)
        return cls(starts, ends, head_ends.astype(np.int64), turn_starts)

    def __len__(self) -> int:
        return len(self.starts)


def fit_tails(bounds: ConversationBounds, window: int) -> np.ndarray:
    """Per conversation, where its kept turns start (after the head): the head end when it fits whole,
    a later user turn when old turns are dropped, SKIPPED when even the last turn does not fit."""
    lengths = bounds.ends - bounds.starts
    tails = bounds.head_ends.copy()
    long = np.flatnonzero(lengths > window)
    if len(long) == 0:
        return tails
    head_lengths = bounds.head_ends[long] - bounds.starts[long]
    # The kept turns must start at or after `need` for head + turns to fit the window.
    need = bounds.ends[long] - (window - head_lengths)
    index = np.searchsorted(bounds.turn_starts, need, side="left")
    found = index < len(bounds.turn_starts)
    turn = bounds.turn_starts[np.minimum(index, max(len(bounds.turn_starts) - 1, 0))] if len(bounds.turn_starts) \
        else np.zeros_like(need)
    usable = found & (turn < bounds.ends[long]) & (head_lengths < window)
    tails[long] = np.where(usable, turn, SKIPPED)
    return tails


def kept_lengths(bounds: ConversationBounds, tails: np.ndarray) -> np.ndarray:
    """Tokens each conversation keeps under `tails` (0 for a skipped one)."""
    kept = (bounds.head_ends - bounds.starts) + (bounds.ends - np.maximum(tails, bounds.head_ends))
    return np.where(tails == SKIPPED, 0, kept)


@dataclass(frozen=True)
class FitCounts:
    """How a split's conversations fit one window length."""

    conversations: int
    trimmed: int  # kept their head and dropped oldest turns
    skipped: int

    @classmethod
    def of(cls, bounds: ConversationBounds, window: int) -> FitCounts:
        tails = fit_tails(bounds, window)
        skipped = int((tails == SKIPPED).sum())
        trimmed = int(((tails != SKIPPED) & (tails != bounds.head_ends)).sum())
        return cls(len(bounds), trimmed, skipped)

    def describe(self, context: int) -> str:
        return (f"{self.conversations} conversations, {self.trimmed} longer than the {context}-token context "
                f"keep their system turn and drop their oldest turns, {self.skipped} skipped (too long even so)")
