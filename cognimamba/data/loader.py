"""Batches of token windows from a data dir, chosen deterministically from (seed, step).

Each micro-batch is a pure function of its position in training, so resuming at step N sees exactly
the data an uninterrupted run would have seen, with no loader state to save.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from cognimamba.data.data_dir import DataDir
from cognimamba.errors import CogniError

IGNORE_INDEX = -100


class TokenWindows:
    def __init__(self, data: DataDir, split: str, seed: int = 0, rank: int = 0) -> None:
        self.tokens = data.tokens(split)
        self.mask = data.mask(split)
        self.split = split
        self.seed = seed
        self.rank = rank
        self.where = f"{data.path}/{split}.bin"

    def __len__(self) -> int:
        return len(self.tokens)

    def check_fits(self, seq_len: int) -> None:
        if len(self.tokens) < seq_len + 1:
            raise CogniError(f"{self.where}: {len(self.tokens)} tokens is smaller than one sequence of "
                             f"{seq_len + 1}; use more text or a shorter model.max_seq_len")

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

    def random_batch(self, step: int, micro_step: int, batch_size: int, seq_len: int,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        self.check_fits(seq_len)
        rng = np.random.default_rng([self.seed, self.rank, step, micro_step])
        offsets = rng.integers(0, len(self.tokens) - seq_len, size=batch_size)
        return self._gather(offsets, seq_len, device)

    def eval_batches(self, num_batches: int, batch_size: int, seq_len: int,
                     device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Evenly spaced windows: the same ones at every eval, so val losses compare."""
        self.check_fits(seq_len)
        count = num_batches * batch_size
        offsets = np.linspace(0, len(self.tokens) - seq_len - 1, count).astype(np.int64)
        for start in range(0, count, batch_size):
            yield self._gather(offsets[start:start + batch_size], seq_len, device)

    def full_pass(self, batch_size: int, seq_len: int,
                  device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows covering every token once (the last one may be shorter)."""
        total = len(self.tokens) - 1
        self.check_fits(min(seq_len, max(total, 1)))
        offsets = np.arange(0, total - seq_len + 1, seq_len)
        for start in range(0, len(offsets), batch_size):
            yield self._gather(offsets[start:start + batch_size], seq_len, device)
        covered = len(offsets) * seq_len
        if covered < total:
            yield self._gather(np.array([covered]), total - covered, device)
