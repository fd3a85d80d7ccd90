"""The one place a model is built from its config: `model.arch` picks the class, its decoding cache and its cost."""

from __future__ import annotations

import torch

from cognimamba.config.schema import ModelConfig
from cognimamba.model.fixed_point import ContextCache, FixedPointModel, fixed_point_flops_per_token
from cognimamba.model.transformer import DecodeCache, LanguageModel, flops_per_token

Model = LanguageModel | FixedPointModel
MODEL_CLASSES = (LanguageModel, FixedPointModel)


def build_model(config: ModelConfig) -> Model:
    """A freshly initialised model of `config`, on the current default device."""
    return FixedPointModel(config) if config.is_fixed_point else LanguageModel(config)


def new_cache(config: ModelConfig, batch_size: int, max_len: int | None = None, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> DecodeCache | ContextCache:
    """What the model carries between decoding steps: keys, values and Mamba-2 states, or the context vector."""
    if config.is_fixed_point:
        return ContextCache(config, batch_size, max_len, device, dtype)
    return DecodeCache(config, batch_size, max_len, device, dtype)


def training_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, for MFU."""
    return fixed_point_flops_per_token(config) if config.is_fixed_point else flops_per_token(config, seq_len)
