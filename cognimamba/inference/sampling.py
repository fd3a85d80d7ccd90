"""Sampling the next token: temperature, top-k, top-p, repetition penalty."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from cognimamba.config.schema import GenerationConfig

if TYPE_CHECKING:
    pass


@dataclass
class SamplingOptions:
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @classmethod
    def from_config(cls, settings: GenerationConfig, stop: list[str] | None = None) -> SamplingOptions:
        """The run's (or a chat's) generation settings; a negative seed means a fresh random one."""
        return cls(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                   repetition_penalty=settings.repetition_penalty, max_new_tokens=settings.max_new_tokens,
                   seed=settings.seed if settings.seed >= 0 else None, stop=list(stop or []))


def sample_next(logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator | None,
                previous: torch.Tensor | None = None) -> int:
    """One token id from logits of shape [vocab]."""
    logits = logits.float()
    if options.repetition_penalty != 1.0 and previous is not None and previous.numel():
        # CTRL-style: make already-seen tokens less likely, whatever the sign of their logit.
        seen = logits[previous]
        logits = logits.clone()
        logits[previous] = torch.where(seen > 0, seen / options.repetition_penalty, seen * options.repetition_penalty)
    if options.greedy:
        return int(torch.argmax(logits))
    logits = logits / options.temperature
    if options.top_k > 0 and options.top_k < logits.numel():
        kth = torch.topk(logits, options.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < options.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= options.top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probabilities = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))
