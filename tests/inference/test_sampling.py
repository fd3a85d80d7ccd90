"""Sampling settings mean what transformers takes them to mean, and a setting that passes validation samples."""

from __future__ import annotations

import pytest
import torch

from cognimamba.config.schema import Config, GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.sampling import sample_next

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
