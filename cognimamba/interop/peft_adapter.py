"""A PEFT LoRA adapter of our LanguageModel, rewritten for the exported LlamaForCausalLM.

Our LoRA adapters sit on the fused projections (`qkv`, `gate_up`), Llama's on separate ones. A LoRA update
is B @ A with A shared by every output row, so the update of q alone is B_q @ A: the rows of lora_B split
exactly like the fused weight does and lora_A is repeated, with the same rank and alpha. `proj` and `down`
only change names. `peft.PeftModel.from_pretrained(llama, DIR)` then gives the same logits as our merged
model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cognimamba.config.schema import ModelConfig
from cognimamba.errors import CogniError
from cognimamba.runs.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from cognimamba.runs.loading import read_config
from cognimamba.runs.lora import check_base_fingerprint, check_same_architecture, is_lora_run, lora_base_path
from cognimamba.runs.tensors import read_weights, save_weights
from cognimamba.system.fileio import atomic_write_json, read_json

_KEY = re.compile(r"^(?:base_model\.model\.)?layers\.(\d+)\.(attention\.qkv|attention\.proj|mlp\.gate_up|mlp\.down)"
                  r"\.(lora_A|lora_B)(?:\.[A-Za-z_]\w*)?\.weight$")
# Our fused module -> the Llama modules it becomes, in the row order of the fused weight.
HF_MODULES = {"attention.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
              "attention.proj": ("self_attn.o_proj",), "mlp.gate_up": ("mlp.gate_proj", "mlp.up_proj"),
              "mlp.down": ("mlp.down_proj",)}


@dataclass
class PeftAdapter:
    """adapter_config.json and adapter_model.safetensors, as PEFT saves them."""

    config: dict[str, Any]
    state: dict[str, torch.Tensor]


def read_peft_adapter(directory: Path) -> PeftAdapter:
    config = read_json(Path(directory) / ADAPTER_CONFIG, "PEFT adapter config")
    if not isinstance(config, dict):
        raise CogniError(f"{Path(directory) / ADAPTER_CONFIG}: not a PEFT adapter config")
    return PeftAdapter(config, read_weights(Path(directory) / ADAPTER_WEIGHTS))


def write_peft_adapter(directory: Path, adapter: PeftAdapter) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / ADAPTER_CONFIG, adapter.config)
    save_weights(directory / ADAPTER_WEIGHTS, adapter.state, metadata={"format": "pt"})


def check_convertible(config: dict[str, Any]) -> None:
    """Adapter features without a per-module Llama equivalent are refused by name (export --merged works)."""
    if config.get("peft_type", "LORA") != "LORA":
        raise CogniError(f"adapter_config.json: peft_type {config.get('peft_type')} is not LoRA; export --merged")
    refused = {"use_dora": "DoRA", "modules_to_save": "modules_to_save", "rank_pattern": "rank_pattern",
               "alpha_pattern": "alpha_pattern", "target_parameters": "target_parameters",
               "layer_replication": "layer_replication", "trainable_token_indices": "trainable_token_indices",
               "lora_bias": "lora_bias", "fan_in_fan_out": "fan_in_fan_out"}
    for key, label in refused.items():
        if config.get(key):
            raise CogniError(f"adapter_config.json: {label} adapters cannot be rewritten for Llama module names; "
                             "export with --merged instead")
    if config.get("bias", "none") != "none":
        raise CogniError(f"adapter_config.json: bias={config['bias']!r} adapters cannot be rewritten for Llama; "
                         "export with --merged instead")


def to_hf_adapter(adapter: PeftAdapter, model: ModelConfig, base_model: str) -> PeftAdapter:
    """Rename and split an adapter of our LanguageModel into one of the exported LlamaForCausalLM."""
    check_convertible(adapter.config)
    row_splits = {"attention.qkv": [model.q_dim, model.kv_dim, model.kv_dim],
                  "mlp.gate_up": [model.ffn_dim, model.ffn_dim]}
    state: dict[str, torch.Tensor] = {}
    modules: dict[str, set[int]] = {}
    for key, tensor in adapter.state.items():
        match = _KEY.match(key)
        if match is None:
            raise CogniError(f"adapter tensor {key} has no Llama equivalent; export with --merged instead")
        layer, ours, part = int(match.group(1)), match.group(2), match.group(3)
        targets = HF_MODULES[ours]
        if part == "lora_B" and len(targets) > 1:
            pieces = tensor.split(row_splits[ours], dim=0)
        else:  # lora_A is shared by every split output; each module gets its own copy
            pieces = tuple(tensor.clone() for _ in targets)
        for target, piece in zip(targets, pieces, strict=True):
            state[f"base_model.model.model.layers.{layer}.{target}.{part}.weight"] = piece.contiguous()
            modules.setdefault(target.split(".")[-1], set()).add(layer)
    if not state:
        raise CogniError("the adapter holds no LoRA weights")
    every_layer = set(range(model.n_layers))
    if all(layers == every_layer for layers in modules.values()):
        target_modules = sorted(modules)
    else:  # adapted in some layers only: name each module, so PEFT adds no untrained LoRA elsewhere
        names = {key.removeprefix("base_model.model.").rsplit(".", 2)[0] for key in state}
        target_modules = sorted(names)
    config = {key: value for key, value in adapter.config.items() if key != "auto_mapping"}  # names our class
    config = {**config, "target_modules": target_modules, "base_model_name_or_path": base_model,
              "task_type": "CAUSAL_LM", "layers_to_transform": None, "layers_pattern": None,
              "exclude_modules": None, "inference_mode": True}
    return PeftAdapter(config, state)


@dataclass
class LoraRun:
    """A LoRA fine-tune: its adapter and the run dir of the base model it adapts."""

    base_run: Path
    adapter: PeftAdapter


def find_lora(run: Path) -> LoraRun | None:
    """The adapter and base of a LoRA run dir (layout in runs/layout.py), or None for a plain run."""

    run = Path(run)
    if not is_lora_run(run):
        return None
    config, payload = read_config(run)
    base = lora_base_path(run, payload)
    check_same_architecture(read_config(base)[0].model, config.model, str(run))
    check_base_fingerprint(payload.get("lora") or {}, base, run)
    return LoraRun(base, read_peft_adapter(run))


def write_hf_adapter(directory: Path, lora: LoraRun, model: ModelConfig, base_model: Path) -> None:
    write_peft_adapter(directory, to_hf_adapter(lora.adapter, model, str(base_model)))
