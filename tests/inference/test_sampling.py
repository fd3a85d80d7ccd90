"""Sampling settings mean what transformers takes them to mean, and a setting that passes validation samples."""

from __future__ import annotations

import pytest
import torch

from cognimamba.config.schema import Config, GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.sampling import sample_next, sample_rows, seeded_generator

LOGITS = torch.tensor([1.0, 3.0, 2.0, -1.0])


def test_top_p_of_zero_keeps_only_the_likeliest_token():
    generator = torch.Generator().manual_seed(0)
    settings = GenerationConfig(temperature=1.0, top_k=0, top_p=0.0)
    assert {sample_next(LOGITS, settings, generator) for _ in range(50)} == {1}


def test_top_p_between_zero_and_one_is_unchanged():
    generator = torch.Generator().manual_seed(0)
    settings = GenerationConfig(temperature=1.0, top_k=0, top_p=0.75)  # 1 alone holds 0.67 of the mass, 1 and 2 0.91
    assert {sample_next(LOGITS, settings, generator) for _ in range(200)} == {1, 2}


def test_a_vanishing_temperature_is_refused_by_validation():
    with pytest.raises(CogniError, match=r"generation\.temperature = 1e-40 is too small.*0 for greedy"):
        Config.from_dict({"generation": {"temperature": 1e-40}})
    assert Config.from_dict({"generation": {"temperature": 0}}).generation.temperature == 0


def test_the_smallest_allowed_temperature_samples_the_likeliest_token():
    from cognimamba.config.schema import MIN_SAMPLING_TEMPERATURE

    settings = Config.from_dict({"generation": {"temperature": MIN_SAMPLING_TEMPERATURE}}).generation
    generator = torch.Generator().manual_seed(0)
    assert {sample_next(LOGITS * 100, settings, generator) for _ in range(20)} == {1}


MIXED = [GenerationConfig(temperature=0.0), GenerationConfig(temperature=0.8, top_k=50, top_p=0.9, seed=1),
         GenerationConfig(temperature=1.0, top_k=0, top_p=0.5, seed=2),
         GenerationConfig(temperature=0.8, top_k=50, top_p=0.9, seed=3),
         GenerationConfig(temperature=1.3, top_k=5, top_p=1.0, repetition_penalty=1.3, seed=4),
         GenerationConfig(temperature=0.0, repetition_penalty=1.5),
         GenerationConfig(temperature=0.7, top_k=0, top_p=1.0, seed=-1)]


def multinomial_sample(logits: torch.Tensor, settings: GenerationConfig, generator: torch.Generator | None,
                       previous: torch.Tensor | None) -> int:
    """The reference: one row filtered step by step and drawn by torch.multinomial (the sampler before batching)."""
    logits = logits.float()
    if settings.repetition_penalty != 1.0 and previous is not None and previous.numel():
        seen = logits[previous]
        logits = logits.clone()
        penalty = settings.repetition_penalty
        logits[previous] = torch.where(seen > 0, seen / penalty, seen * penalty)
    if settings.temperature <= 0:
        return int(torch.argmax(logits))
    logits, candidates = logits / settings.temperature, None
    if 0 < settings.top_k < logits.numel():
        logits, candidates = torch.topk(logits, settings.top_k)
    if settings.top_p < 1.0:
        if candidates is None:
            logits, candidates = torch.sort(logits, descending=True)
        probabilities = torch.softmax(logits, dim=-1)
        drop = probabilities.cumsum(-1) - probabilities >= settings.top_p
        drop[0] = False
        logits = logits.masked_fill(drop, float("-inf"))
    choice = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
    return int(candidates[choice]) if candidates is not None else choice


def test_a_batch_of_rows_samples_what_each_row_samples_alone_with_multinomial():
    """Same ids and the same draws from every row's generator, over steps, for rows of mixed settings: a batch
    engine's step against each row alone through torch.multinomial (and through sample_next, `cogni chat`'s)."""
    logits_source = torch.Generator().manual_seed(7)
    seen = [torch.randint(0, 300, (6,), generator=logits_source) for _ in MIXED]
    seeded = [index for index, settings in enumerate(MIXED) if settings.seed >= 0]
    batched_generators = [seeded_generator(settings.seed) for settings in MIXED]
    reference_generators = [seeded_generator(settings.seed) for settings in MIXED]
    single_generators = [seeded_generator(settings.seed) for settings in MIXED]
    for _ in range(20):
        logits = torch.randn(len(MIXED), 300, generator=logits_source) * 3
        batched = sample_rows(logits, MIXED, batched_generators, seen)
        rows = list(zip(logits, MIXED, seen, strict=True))
        reference = [multinomial_sample(row, settings, generator, previous)
                     for (row, settings, previous), generator in zip(rows, reference_generators, strict=True)]
        single = [sample_next(row, settings, generator, previous)
                  for (row, settings, previous), generator in zip(rows, single_generators, strict=True)]
        assert [batched[i] for i in seeded] == [reference[i] for i in seeded] == [single[i] for i in seeded]
        assert len({batched[i] for i in seeded}) > 1  # the rows really differ
        assert all(0 <= token < 300 for token in batched)
    for generators in (batched_generators, single_generators):
        for generator, reference_generator in zip(generators, reference_generators, strict=True):
            if generator is not None:
                assert torch.equal(generator.get_state(), reference_generator.get_state())


def test_a_batch_row_without_finite_probabilities_is_refused():
    settings = GenerationConfig(temperature=1.0, top_k=0, top_p=1.0, seed=0)
    with pytest.raises(RuntimeError, match="probability tensor"):
        sample_rows(torch.full((2, 4), float("nan")), [settings, settings], [seeded_generator(0)] * 2, [None, None])
