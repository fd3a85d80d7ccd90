"""Batches of token windows from a data dir, chosen deterministically from (seed, step).

Each micro-batch is a pure function of its position in training, so resuming at step N sees exactly
the data an uninterrupted run would have seen, with no loader state to save.

Text data is read in windows at random offsets. Chat data (a data dir with a loss mask) is read in
windows that start at a conversation start and hold whole conversations, packed one after another and
padded with untrained <|endoftext|>: a reply is never trained without the system turn that lists its
tools. A conversation longer than the window keeps its system turn and drops whole oldest turns, or is
skipped when even that does not fit (data/conversation_fit.py); `alignment(seq_len)` counts both.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from cognimamba.data.conversation_fit import SKIPPED, ConversationBounds, FitCounts, fit_tails, kept_lengths
from cognimamba.data.data_dir import DataDir
from cognimamba.errors import CogniError
from cognimamba.model.loss import IGNORE_INDEX


class ConversationPacking:
    """For one window length: which tokens each conversation keeps, and whole conversations packed into windows."""

    def __init__(self, bounds: ConversationBounds, window: int) -> None:
        self.bounds = bounds
        self.window = window
        self.tails = fit_tails(bounds, window)
        self.lengths = kept_lengths(bounds, self.tails)
        self.usable = np.flatnonzero(self.tails != SKIPPED)
        self._in_order: list[list[int]] | None = None

    def pieces(self, conversation: int) -> list[tuple[int, int]]:
        """Token ranges of one kept conversation: the head, then the turns that fit."""
        start, head_end = int(self.bounds.starts[conversation]), int(self.bounds.head_ends[conversation])
        tail, end = max(int(self.tails[conversation]), head_end), int(self.bounds.ends[conversation])
        return [(start, end)] if tail == head_end else [(start, head_end), (tail, end)]

    def pack_from(self, first: int) -> list[int]:
        """Conversation `first`, then the ones after it while each fits whole in the room left."""
        packed, room = [first], self.window - int(self.lengths[first])
        for conversation in range(first + 1, len(self.bounds)):
            length = int(self.lengths[conversation])
            if length == 0:
                continue  # skipped
            if length > room:
                break
            packed.append(conversation)
            room -= length
        return packed

    def in_order(self) -> list[list[int]]:
        """Every kept conversation once, packed greedily in order: the windows of a full pass."""
        if self._in_order is None:
            windows: list[list[int]] = []
            room = 0
            for conversation in self.usable:
                length = int(self.lengths[conversation])
                if not windows or length > room:
                    windows.append([])
                    room = self.window
                windows[-1].append(int(conversation))
                room -= length
            self._in_order = windows
        return self._in_order


class TokenWindows:
    def __init__(self, data: DataDir, split: str, seed: int = 0, rank: int = 0, random_offsets: bool = False) -> None:
        self.tokens = data.tokens(split)
        self.mask = data.mask(split)
        self.split = split
        self.seed = seed
        self.rank = rank
        self.where = f"{data.path}/{split}.bin"
        self.bounds = data.conversation_bounds(split) if self.mask is not None else None
        self.random_offsets = random_offsets  # chat data read like text (data.chat_windows = random): an ablation
        self.pad_id = data.end_of_text_id if self.bounds is not None else 0
        self._packings: dict[int, ConversationPacking] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def aligned(self) -> bool:
        """True for chat data: training windows start at conversation starts (unless data.chat_windows = random)."""
        return self.bounds is not None and not self.random_offsets

    def _packing(self, seq_len: int) -> ConversationPacking:
        assert self.bounds is not None
        if seq_len not in self._packings:
            self._packings[seq_len] = ConversationPacking(self.bounds, seq_len + 1)
        return self._packings[seq_len]

    def alignment(self, seq_len: int) -> FitCounts | None:
        """How the conversations fit windows of seq_len (None for text data)."""
        return FitCounts.of(self.bounds, seq_len + 1) if self.bounds is not None else None

    def check_fits(self, seq_len: int) -> None:
        """The windows random_batch reads: whole conversations, or (text, data.chat_windows = random) any slice."""
        if self.aligned:
            self.check_conversations_fit(seq_len)
        elif len(self.tokens) < seq_len + 1:
            raise CogniError(f"{self.where}: {len(self.tokens)} tokens is smaller than one sequence of "
                             f"{seq_len + 1}; use more text or a shorter model.max_seq_len")

    def check_evaluation_fits(self, seq_len: int) -> None:
        """The windows eval_batches and full_pass read: chat data is evaluated in whole conversations even when
        it trains at random offsets, so a random-offset run needs a conversation that fits, or it never validates."""
        if self.bounds is not None:
            self.check_conversations_fit(seq_len)
        else:
            self.check_fits(seq_len)

    def check_conversations_fit(self, seq_len: int) -> None:
        assert self.bounds is not None
        if len(self._packing(seq_len).usable) == 0:
            shortest = int(np.min(self.bounds.ends - self.bounds.starts))
            raise CogniError(f"{self.where}: no conversation fits a window of {seq_len} tokens, even keeping "
                             f"only its system turn and last turn (the shortest has {shortest} tokens); "
                             "use a longer model.max_seq_len (and data.seq_len_warmup stages)")

    def _gather(self, offsets: np.ndarray, seq_len: int,
                device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        index = offsets[:, None] + np.arange(seq_len + 1)[None, :]
        window = torch.from_numpy(self.tokens[index].astype(np.int64))
        inputs, targets = window[:, :-1], window[:, 1:].clone()
        if self.mask is not None:
            # A target is trained only where the mask marks it as an assistant token.
            trained = torch.from_numpy(self.mask[index][:, 1:].astype(np.bool_))
            targets[~trained] = IGNORE_INDEX
        if str(device).startswith("cuda"):
            return inputs.pin_memory().to(device, non_blocking=True), targets.pin_memory().to(device, non_blocking=True)
        return inputs.to(device), targets.to(device)

    def _gather_packed(self, windows: list[list[int]], seq_len: int,
                       device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows of whole conversations, each padded to seq_len + 1 with untrained <|endoftext|>."""
        packing = self._packing(seq_len)
        index = np.full((len(windows), seq_len + 1), -1, dtype=np.int64)
        for row, conversations in enumerate(windows):
            ranges = [np.arange(start, end) for conversation in conversations
                      for start, end in packing.pieces(conversation)]
            positions = np.concatenate(ranges)
            index[row, :len(positions)] = positions
        padding = index < 0
        safe = np.where(padding, 0, index)
        window = torch.from_numpy(np.where(padding, self.pad_id, self.tokens[safe]).astype(np.int64))
        assert self.mask is not None
        trained = torch.from_numpy((self.mask[safe].astype(np.bool_) & ~padding)[:, 1:])
        inputs, targets = window[:, :-1], window[:, 1:].clone()
        targets[~trained] = IGNORE_INDEX
        if str(device).startswith("cuda"):
            return inputs.pin_memory().to(device, non_blocking=True), targets.pin_memory().to(device, non_blocking=True)
        return inputs.to(device), targets.to(device)

    def random_batch(self, step: int, micro_step: int, batch_size: int, seq_len: int,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        self.check_fits(seq_len)
        rng = np.random.default_rng([self.seed, self.rank, step, micro_step])
        if self.aligned:
            packing = self._packing(seq_len)
            firsts = packing.usable[rng.integers(0, len(packing.usable), size=batch_size)]
            return self._gather_packed([packing.pack_from(int(first)) for first in firsts], seq_len, device)
        offsets = rng.integers(0, len(self.tokens) - seq_len, size=batch_size)
        return self._gather(offsets, seq_len, device)

    def eval_batches(self, num_batches: int, batch_size: int, seq_len: int,
                     device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Evenly spaced windows: the same ones at every eval, so val losses compare."""
        self.check_evaluation_fits(seq_len)
        count = num_batches * batch_size
        if self.bounds is not None:
            windows = self._packing(seq_len).in_order()
            chosen = np.unique(np.linspace(0, len(windows) - 1, min(count, len(windows))).astype(np.int64))
            picked = [windows[int(index)] for index in chosen]
            for start in range(0, len(picked), batch_size):
                yield self._gather_packed(picked[start:start + batch_size], seq_len, device)
            return
        offsets = np.linspace(0, len(self.tokens) - seq_len - 1, count).astype(np.int64)
        for start in range(0, count, batch_size):
            yield self._gather(offsets[start:start + batch_size], seq_len, device)

    def full_pass(self, batch_size: int, seq_len: int,
                  device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every token once: non-overlapping windows (the last may be shorter); for chat data, every
        conversation once, in packed windows that start at conversation starts."""
        if self.bounds is not None:
            self.check_evaluation_fits(seq_len)
            windows = self._packing(seq_len).in_order()
            for start in range(0, len(windows), batch_size):
                yield self._gather_packed(windows[start:start + batch_size], seq_len, device)
            return
        total = len(self.tokens) - 1
        self.check_fits(min(seq_len, max(total, 1)))
        offsets = np.arange(0, total - seq_len + 1, seq_len)
        for start in range(0, len(offsets), batch_size):
            yield self._gather(offsets[start:start + batch_size], seq_len, device)
        covered = len(offsets) * seq_len
        if covered < total:
            yield self._gather(np.array([covered]), total - covered, device)
