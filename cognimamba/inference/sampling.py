"""Sampling the next token: temperature, top-k, top-p, repetition penalty.

The settings are the run's `GenerationConfig` (or a chat's copy of it): one type from the config file
to the sampler, so a setting means the same thing in `cogni chat`, tool eval, bench and the HF export.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cognimamba.config.schema import GenerationConfig


def seeded_generator(seed: int) -> torch.Generator | None:
    """A CPU generator for a seed, or None for a negative seed (-1 = a fresh random draw each reply)."""
    return torch.Generator(device="cpu").manual_seed(seed) if seed >= 0 else None


def sample_next(logits: torch.Tensor, settings: GenerationConfig, generator: torch.Generator | None,
                previous: torch.Tensor | None = None) -> int:
    """One token id from logits of shape [vocab]."""
    return sample_rows(logits[None], [settings], [generator], [previous])[0]


def sample_rows(logits: torch.Tensor, settings: Sequence[GenerationConfig],
                generators: Sequence[torch.Generator | None],
                previous: Sequence[torch.Tensor | None]) -> list[int]:
    """One token id per row of logits [rows, vocab], each with its own settings, generator and ids seen so far (for
    the repetition penalty): a batch engine's step in a few operations rather than a dozen per row.

    Each row gets the same id, and takes the same draws from its generator, as it would alone: rows with the same
    temperature, top-k and top-p are filtered together, and the draw is torch.multinomial's own for one sample
    (the argmax of the probabilities over Exp(1) noise), the noise drawn row by row. So a seeded reply is the same
    alone, beside others (`cogni serve`), and in `cogni chat`.
    """
    logits = logits.float()
    chosen: list[int] = [0] * len(settings)
    groups: dict[tuple[float, int, float], list[int]] = {}
    penalised: dict[int, torch.Tensor] = {}
    for index, (setting, seen) in enumerate(zip(settings, previous, strict=True)):
        if setting.repetition_penalty != 1.0 and seen is not None and seen.numel():
            row = logits[index].clone()
            values = row[seen]
            penalty = setting.repetition_penalty
            row[seen] = torch.where(values > 0, values / penalty, values * penalty)
            penalised[index] = row
        top_k = setting.top_k if 0 < setting.top_k < logits.size(-1) else 0
        key = (0.0, 0, 1.0) if setting.temperature <= 0 else (setting.temperature, top_k, setting.top_p)
        groups.setdefault(key, []).append(index)
    for (temperature, top_k, top_p), indexes in groups.items():
        if len(indexes) == len(settings) and not penalised:
            rows = logits  # one group (a lone stream, or a batch with one set of settings): no copy
        else:
            rows = torch.stack([penalised.get(i, logits[i]) for i in indexes])
        if temperature <= 0:
            for index, token in zip(indexes, rows.argmax(-1).tolist(), strict=True):
                chosen[index] = token
            continue
        rows, candidates = rows.cpu() / temperature, None
        if top_k:
            rows, candidates = torch.topk(rows, top_k)
        if top_p < 1.0:
            if candidates is None:
                rows, candidates = torch.sort(rows, descending=True)
            probabilities = torch.softmax(rows, dim=-1)
            drop = probabilities.cumsum(-1) - probabilities >= top_p
            drop[:, 0] = False
            rows = rows.masked_fill(drop, float("-inf"))
        probabilities = torch.softmax(rows, dim=-1)
        if not bool(torch.isfinite(probabilities).all()):
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        noise = torch.stack([torch.empty(rows.size(-1)).exponential_(1, generator=generators[i]) for i in indexes])
        picks = (probabilities / noise).argmax(-1)
        tokens = candidates.gather(1, picks[:, None])[:, 0] if candidates is not None else picks
        for index, token in zip(indexes, tokens.tolist(), strict=True):
            chosen[index] = token
    return chosen
