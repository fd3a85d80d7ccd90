"""Residual-branch dropout whose mask is drawn with torch.rand on CPU.

F.dropout draws its CPU mask with bernoulli_, about three times slower than rand: on two Zen 3 cores a mask for
the `cpu` profile's [16, 256, 256] activations took 11.2 ms against 3.6, and dropout forward and backward 12.7-14.0
against 5.4-8.3 ms, which at eight dropouts a step was 8% of the profile's training step
(benchmarks/RESULTS.md). The mask is the same Bernoulli draw; elsewhere (CUDA) F.dropout's fused kernel stays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """x with each element zeroed with probability p and the rest scaled by 1 / (1 - p) (training only)."""
    if x.device.type != "cpu" or p <= 0.0 or p >= 1.0:
        return F.dropout(x, p)
    # fp32 draws even under bf16 autocast: bf16's 8-bit mantissa would round p.
    keep = (torch.rand_like(x, dtype=torch.float32) >= p).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


def set_dropout(model: nn.Module, p: float) -> None:
    """Every block's dropout rate to `p`: the blocks (and the fixed-point model's head) read their `dropout` float
    at each forward, so a schedule changes it between steps without rebuilding anything."""
    for module in model.modules():
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = p
