"""Phase 2's input: the fixed-point contexts of the training windows, solved once and kept in the run dir.

The file is keyed by the data (its meta.json and train.bin's size and time) and by the weights that make the
contexts (embedding and updater, frozen from phase 2 on): a resumed phase 2 reads it back instead of solving
again, and a change to either solves anew. Contexts lie in [-1, 1], so fp16 keeps them to about 5e-4; the file is
one safetensors, written atomically (RUN/fixed_point_contexts.safetensors).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.errors import CogniError
from cognimamba.model.fixed_point import Convergence, FixedPointModel
from cognimamba.runs.layout import CONTEXT_CACHE
from cognimamba.runs.tensors import read_weights, save_weights

CACHE_FORMAT = 1
MAX_CACHED_BYTES = 512 * 2**20  # windows past this many bytes of contexts are left out of phase 2
SOLVE_BATCH = 16


@dataclass
class CachedContexts:
    """Whole training windows with their frozen contexts, and how phase 1's contexts converged on them."""

    inputs: torch.Tensor  # [windows, seq_len] token ids
    targets: torch.Tensor  # [windows, seq_len], IGNORE_INDEX where no loss is taken (chat: all but the assistant)
    contexts: torch.Tensor  # [windows, seq_len, context_dim] fp16
    convergence_rate: float  # share of tokens settled under the threshold within max_iterations passes
    mean_iterations: float
    first_step: int  # the step phase 2 began at, for its own warmup
    left_out: int  # windows past MAX_CACHED_BYTES

    @property
    def tokens(self) -> int:
        return self.inputs.numel()

    def batch(self, seed: int, step: int, micro_step: int, batch_size: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(contexts, inputs, targets) of windows drawn from (seed, step, micro_step), as TokenWindows draws."""
        rng = np.random.default_rng([seed, step, micro_step])
        rows = torch.from_numpy(rng.integers(0, len(self.inputs), size=batch_size))
        return (self.contexts[rows].to(device, torch.float32), self.inputs[rows].to(device),
                self.targets[rows].to(device))


def cache_key(model: FixedPointModel, data: DataDir, seq_len: int) -> str:
    """sha256 of what the cached contexts depend on: the training data and the context-making weights."""
    digest = hashlib.sha256()
    train_file = data.path / "train.bin"
    stat = train_file.stat()
    settings = {"format": CACHE_FORMAT, "seq_len": seq_len, "meta": data.meta, "train_bytes": stat.st_size,
                "train_mtime_ns": stat.st_mtime_ns, "threshold": model.config.fixed_point_threshold,
                "max_iterations": model.config.fixed_point_max_iterations}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for parameter in model.context_parameters():
        digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def read_cached(run: Path, key: str) -> CachedContexts | None:
    """The run's cached contexts if they were made from the same data and weights, else None."""
    path = run / CONTEXT_CACHE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None  # torn or foreign: solved again and replaced
    if meta.get("key") != key:
        return None
    tensors = read_weights(path)
    return CachedContexts(tensors["inputs"], tensors["targets"], tensors["contexts"],
                          float(meta["convergence_rate"]), float(meta["mean_iterations"]), int(meta["first_step"]),
                          int(meta["left_out"]))


def write_cached(run: Path, key: str, cached: CachedContexts) -> None:
    meta = {"format": "pt", "key": key, "convergence_rate": repr(cached.convergence_rate),
            "mean_iterations": repr(cached.mean_iterations), "first_step": str(cached.first_step),
            "left_out": str(cached.left_out)}
    save_weights(run / CONTEXT_CACHE, {"inputs": cached.inputs, "targets": cached.targets,
                                       "contexts": cached.contexts}, metadata=meta)


@torch.no_grad()
def solve_windows(model: FixedPointModel, windows: TokenWindows, seq_len: int, first_step: int,
                  device: torch.device) -> CachedContexts:
    """Every whole training window once (TokenWindows.full_pass), solved to the fixed point, up to the cap."""
    was_training = model.training
    model.eval()
    inputs, targets, contexts = [], [], []
    settled = iterations = tokens = left_out = 0
    room = MAX_CACHED_BYTES // (seq_len * model.context_dim * 2)
    try:
        for batch_inputs, batch_targets in windows.full_pass(SOLVE_BATCH, seq_len, device):
            if batch_inputs.size(1) < seq_len:
                continue  # the text split's short remainder
            take = min(room, len(batch_inputs))
            left_out += len(batch_inputs) - take
            room -= take
            if take == 0:
                continue
            batch_inputs, batch_targets = batch_inputs[:take], batch_targets[:take]
            convergence = Convergence.start(batch_inputs.shape, device)
            solved = model.solve(model.token_inputs(batch_inputs), None, convergence)
            settled += int(convergence.converged.sum())
            iterations += int(convergence.iterations.sum())
            tokens += batch_inputs.numel()
            inputs.append(batch_inputs.cpu())
            targets.append(batch_targets.cpu())
            contexts.append(solved.to(torch.float16).cpu())
    finally:
        model.train(was_training)
    if not inputs:
        raise CogniError(f"{windows.where}: no whole window of {seq_len} tokens to train the token head on; use more "
                         "text or a shorter model.max_seq_len")
    return CachedContexts(torch.cat(inputs), torch.cat(targets), torch.cat(contexts), settled / max(tokens, 1),
                          iterations / max(tokens, 1), first_step, left_out)


def cached_contexts(model: FixedPointModel, data: DataDir, windows: TokenWindows, run: Path, seq_len: int,
                    step: int, device: torch.device, is_main: bool) -> tuple[CachedContexts, bool]:
    """The contexts phase 2 trains on, and whether they were read back (True) or solved now (False)."""
    key = cache_key(model, data, seq_len)
    cached = read_cached(run, key)
    if cached is not None:
        return cached, True
    cached = solve_windows(model, windows, seq_len, step, device)
    if is_main:
        write_cached(run, key, cached)
    return cached, False
