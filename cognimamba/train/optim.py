"""The optimizer train.optimizer names: AdamW (weight decay only on matrices, not norms or embeddings, fused
where the device allows), or Muon for the hidden matrices with AdamW for the rest (train/muon_groups.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cognimamba.config.schema import TrainConfig
from cognimamba.errors import CogniError
from cognimamba.runs.lora import base_transformer
from cognimamba.system.hardware import cpu_has_native_bf16
from cognimamba.train.muon import Muon
from cognimamba.train.muon_groups import split_for_muon


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "tok_embeddings" in name or "norm" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class CombinedOptimizer:
    """Several torch optimizers (Muon and AdamW) stepped, cleared, saved and restored as one.

    `param_groups` lists every part's groups (the same dicts), so the schedule, gradient clipping and the fp16
    GradScaler (which reads `param_groups` and calls `step`) treat it like any torch optimizer.
    """

    def __init__(self, parts: dict[str, torch.optim.Optimizer]) -> None:
        self.parts = parts

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.parts.values() for group in part.param_groups]

    def step(self, closure: None = None) -> None:
        for part in self.parts.values():
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.parts):
            raise CogniError(f"the checkpoint's optimizer state has parts {', '.join(sorted(state))}, this run's "
                             f"optimizer {', '.join(self.parts)}; resume with the train.optimizer it was saved with")
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


def newton_schulz_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Muon's orthogonalisation dtype: bf16 where the hardware multiplies it natively, else fp32 (emulated bf16
    costs a CPU several times fp32; benchmarks/README.md, "Muon's Newton-Schulz step")."""
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32


def build_optimizer(model: nn.Module, train: TrainConfig,
                    device: torch.device) -> torch.optim.Optimizer | CombinedOptimizer:
    fused = device.type in ("cuda", "cpu")
    betas = (train.beta1, train.beta2)
    if train.optimizer == "adamw":
        groups = [group for group in parameter_groups(model, train.weight_decay) if group["params"]]
        return torch.optim.AdamW(groups, lr=train.lr, betas=betas, eps=1e-8, fused=fused)
    split = split_for_muon(model, base_transformer(model).config, train)
    if not split.muon:
        raise CogniError("train.optimizer = muon, but no hidden-layer matrix is trained here; use "
                         "train.optimizer = adamw")
    muon = Muon(split.muon, ns_dtype=newton_schulz_dtype(train.muon_precision, device), lr=train.muon_lr,
                momentum=train.muon_momentum, ns_steps=train.muon_ns_steps, adjust_lr_fn=train.muon_adjust_lr)
    parts: dict[str, torch.optim.Optimizer] = {"muon": muon}
    if split.adamw:  # LoRA trains adapter matrices alone
        parts["adamw"] = torch.optim.AdamW(split.adamw, lr=train.lr, betas=betas, eps=1e-8, fused=fused)
    return CombinedOptimizer(parts)


def set_learning_rate(optimizer: torch.optim.Optimizer | CombinedOptimizer, lr: float) -> None:
    """The scheduled train.lr, scaled for each group by its `lr_ratio` (Muon's own peak rate over train.lr)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_ratio", 1.0)


def optimizer_step(optimizer: torch.optim.Optimizer | CombinedOptimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Apply the (already clipped) gradients, through the fp16 GradScaler when there is one, and clear them."""
    if scaler is not None:
        scaler.step(optimizer)  # type: ignore[arg-type]
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
