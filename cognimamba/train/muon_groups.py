"""Which parameters Muon trains and which AdamW trains, each group with its own learning rate and weight decay.

Muon orthogonalises the update of a hidden-layer matrix; the rest is not a linear map between hidden states and
stays with AdamW: the token embeddings (a lookup table, tied to the output head by default), an untied output
head, norms and gains, biases, Mamba-2's depthwise convolution and per-head scalars. LoRA's adapter matrices
inside the blocks are hidden matrices too and go to Muon, whole (their fused rows are the low-rank factor's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from cognimamba.config.schema import ModelConfig, TrainConfig


@dataclass
class MuonSplit:
    """The trainable parameters by optimizer; `muon` holds one group per kind of fused weight."""

    muon: list[dict] = field(default_factory=list)
    adamw: list[dict] = field(default_factory=list)


def fused_row_blocks(name: str, config: ModelConfig) -> tuple[int, ...] | None:
    """The row counts of the maps a fused weight stacks (q/k/v, gate/up, Mamba-2's z/x/B/C/dt), else None."""
    if name.endswith("attention.qkv.weight"):
        return (config.q_dim, config.kv_dim, config.kv_dim)
    if name.endswith("mlp.gate_up.weight"):
        return (config.ffn_dim, config.ffn_dim)
    if name.endswith("mamba.in_proj.weight"):
        inner, state = config.mamba_inner, config.mamba_state_size
        return (inner, inner, state, state, config.mamba_heads)
    return None


def is_hidden_matrix(name: str, param: nn.Parameter) -> bool:
    """A 2-D weight inside a block (attention, MLP, Mamba-2 projections, LoRA adapters): Muon's."""
    return param.ndim == 2 and "layers." in name and "norm" not in name


def split_for_muon(model: nn.Module, config: ModelConfig, train: TrainConfig) -> MuonSplit:
    """Hidden matrices to Muon at train.muon_lr / muon_weight_decay (one group per fused shape); embeddings
    and norms to AdamW without decay, an untied head and any other matrix to AdamW with train.weight_decay.

    `lr_ratio` is each group's peak rate over train.lr, so the schedule scales every group alike.
    """
    muon_ratio = train.muon_lr / train.lr if train.lr > 0 else 0.0
    by_blocks: dict[tuple[int, ...] | None, list[nn.Parameter]] = {}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if is_hidden_matrix(name, param):
            blocks = fused_row_blocks(name, config)
            by_blocks.setdefault(blocks if blocks and sum(blocks) == param.size(0) else None, []).append(param)
        elif param.ndim < 2 or "tok_embeddings" in name or "norm" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    split = MuonSplit()
    for blocks, params in by_blocks.items():
        split.muon.append({"params": params, "row_blocks": blocks or (), "lr": train.muon_lr,
                           "weight_decay": train.muon_weight_decay, "lr_ratio": muon_ratio})
    for params, weight_decay in ((decay, train.weight_decay), (no_decay, 0.0)):
        if params:
            split.adamw.append({"params": params, "weight_decay": weight_decay, "lr_ratio": 1.0})
    return split
