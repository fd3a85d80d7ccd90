"""Sampling the next token: temperature, top-k, top-p, repetition penalty.

The settings are the run's `GenerationConfig` (or a chat's copy of it): one type from the config file
to the sampler, so a setting means the same thing in `cogni chat`, tool eval, bench and the HF export.
"""

from __future__ import annotations

import torch

from cognimamba.config.schema import GenerationConfig


def seeded_generator(seed: int) -> torch.Generator | None:
    """A CPU generator for a seed, or None for a negative seed (-1 = a fresh random draw each reply)."""
    return torch.Generator(device="cpu").manual_seed(seed) if seed >= 0 else None


def sample_next(logits: torch.Tensor, settings: GenerationConfig, generator: torch.Generator | None,
                previous: torch.Tensor | None = None) -> int:
    """One token id from logits of shape [vocab]."""
    logits = logits.float()
    if settings.repetition_penalty != 1.0 and previous is not None and previous.numel():
        # CTRL-style: make already-seen tokens less likely, whatever the sign of their logit.
        seen = logits[previous]
        logits = logits.clone()
        logits[previous] = torch.where(seen > 0, seen / settings.repetition_penalty, seen * settings.repetition_penalty)
    if settings.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / settings.temperature
    # Top-k first, then top-p over those k alone: the same distribution as masking the whole vocabulary, at the
    # cost of sorting k logits instead of all of them (a quarter of a millisecond per token at 4096).
    candidates = None
    if 0 < settings.top_k < logits.numel():
        logits, candidates = torch.topk(logits, settings.top_k)  # sorted, likeliest first
    if settings.top_p < 1.0:
        if candidates is None:
            logits, candidates = torch.sort(logits, descending=True)
        # Keep the smallest set of likeliest tokens holding top_p of the mass, and always the likeliest one:
        # top_p = 0 means that token alone, as in transformers (min_tokens_to_keep), which reads the HF export.
        probabilities = torch.softmax(logits, dim=-1)
        drop = probabilities.cumsum(-1) - probabilities >= settings.top_p
        drop[0] = False
        logits = logits.masked_fill(drop, float("-inf"))
    choice = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
    return int(candidates[choice]) if candidates is not None else choice
