"""Muon for the hidden matrices: torch.optim.Muon's update, with each block of a fused matrix orthogonalised on
its own and the Newton-Schulz iteration in a chosen dtype.

torch.optim.Muon runs Newton-Schulz in bf16 always, which a CPU without native bf16 emulates slowly (figures in
benchmarks/RESULTS.md, "Muon's Newton-Schulz step"); here the dtype is a setting. With bf16 and no blocks the
step is torch's own, bit for bit (tests/train/test_optim.py checks it).

A fused weight (attention's q/k/v rows, the MLP's gate/up rows, Mamba-2's z/x/B/C/dt rows) is several linear
maps stored together for one matmul. Orthogonalising the whole would make their update share one set of
singular directions, so the block with the largest gradient would set the step size of the others; each block
is orthogonalised, and its learning rate adjusted for its own shape, as if it were a separate matrix (as the
modded-nanogpt speedrun does for its stacked q/k/v).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)  # torch.optim.Muon's (Keller Jordan's quintic)


def newton_schulz(update: Tensor, dtype: torch.dtype, steps: int = 5,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = 1e-7) -> Tensor:
    """The nearest semi-orthogonal matrix to `update`, roughly (singular values near 1), computed in `dtype`.

    The same arithmetic as torch.optim.Muon's `_zeropower_via_newtonschulz`, whose dtype is fixed to bf16.
    """
    a, b, c = coefficients
    ortho = update.to(dtype)
    tall = update.size(0) > update.size(1)
    if tall:
        ortho = ortho.T
    ortho = ortho / ortho.norm().clamp(min=eps)  # spectral norm <= Frobenius norm = 1; never in place
    for _ in range(steps):
        gram = ortho @ ortho.T
        gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        ortho = torch.addmm(ortho, gram_update, ortho, beta=a)
    return ortho.T if tall else ortho


def adjusted_lr(lr: float, adjust_lr_fn: str, rows: int, columns: int) -> float:
    """torch.optim.Muon's shape adjustment: `match_rms_adamw` gives the update AdamW's RMS, so AdamW rates carry
    over (Moonshot, "Muon is Scalable for LLM Training"); `original` is Keller Jordan's sqrt(max(1, rows/cols))."""
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, columns))
    return lr * math.sqrt(max(1.0, rows / columns))


class Muon(torch.optim.Muon):
    """torch.optim.Muon (same arguments, state and checkpoints) whose groups may name `row_blocks`: the row
    counts of a fused weight's blocks, orthogonalised one by one."""

    def __init__(self, params: list[dict], ns_dtype: torch.dtype = torch.bfloat16, **options: object) -> None:
        super().__init__(params, **options)  # type: ignore[arg-type]
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            buffers: list[Tensor] = []
            self._init_group(group, params, grads, buffers)
            lr, momentum, weight_decay = float(group["lr"]), group["momentum"], group["weight_decay"]
            for param, grad, buffer in zip(params, grads, buffers, strict=True):
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                param.mul_(1 - lr * weight_decay)
                self._apply_blocks(param, update, group)

    def _apply_blocks(self, param: Tensor, update: Tensor, group: dict) -> None:
        blocks: Sequence[int] = group.get("row_blocks") or (param.size(0),)
        for param_block, update_block in zip(param.split(list(blocks)), update.split(list(blocks)), strict=True):
            ortho = newton_schulz(update_block, self.ns_dtype, group["ns_steps"], group["ns_coefficients"],
                                  group["eps"])
            rate = adjusted_lr(float(group["lr"]), group["adjust_lr_fn"] or "original", *param_block.shape)
            param_block.add_(ortho, alpha=-rate)
