"""Weight formats for inference: fp32, bf16 and int8 load, generate, and stay close to fp32."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from cognimamba.config.schema import GenerationConfig, ModelConfig
from cognimamba.errors import CogniError
from cognimamba.inference import weights as weight_formats
from cognimamba.inference.decoding import ChatModel
from cognimamba.inference.weights import Bf16WeightLinear, Int8Linear, apply_weight_format, weight_format
from cognimamba.model.transformer import DecodeCache, LanguageModel
from cognimamba.runs.loading import load_run
from cognimamba.system.hardware import cpu_has_flag, cpu_has_native_bf16

pytest.importorskip("torchao", reason="int8 weights need torchao (the cpu-int8 extra)")
needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16() and not cpu_has_flag("avx2"),
                                reason="bf16 weights need a CPU with native bf16 or AVX2")

# Largest logit error, relative to the largest fp32 logit, each format may make on the tiny model below.
# int8 rounds each weight to 1/254 of its row's largest; bf16 keeps 8 bits of mantissa.
TOLERANCE = {"int8": 0.03, "bf16": 0.03}


def tiny_model() -> LanguageModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176, max_seq_len=64,
                         dropout=0.0, init_std=0.1)
    return LanguageModel(config).eval()


def decoded_logits(model: LanguageModel, ids: torch.Tensor) -> torch.Tensor:
    """Logits of every position, fed one token at a time through the KV cache (the path chat decodes on)."""
    dtype = next(model.parameters()).dtype
    cache = DecodeCache(model.config, 1, ids.size(1), torch.device("cpu"), dtype)
    with torch.inference_mode():
        return torch.cat([model(ids[:, [i]], cache=cache, start=i) for i in range(ids.size(1))], dim=1).float()


@pytest.mark.parametrize("weights", ["int8", pytest.param("bf16", marks=needs_bf16)])
def test_logits_stay_within_tolerance_of_fp32(weights: str) -> None:
    reference = tiny_model()
    converted = apply_weight_format(copy.deepcopy(reference), weights)
    assert weight_format(converted) == weights
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference(ids)
        prefilled = converted(ids).float()
    scale = expected.abs().max()
    assert (prefilled - expected).abs().max() <= TOLERANCE[weights] * scale
    assert (decoded_logits(converted, ids) - expected).abs().max() <= TOLERANCE[weights] * scale
    assert (prefilled.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9


def test_int8_keeps_the_embedding_table_fp32_and_weights_int8() -> None:
    model = apply_weight_format(tiny_model(), "int8")
    assert model.tok_embeddings.weight.dtype == torch.float32
    layers = [module for module in model.modules() if isinstance(module, Int8Linear)]
    assert len(layers) == 4 * 2 + 1  # qkv, proj, gate_up and down per layer, and the (untied) lm_head
    assert all(layer.qweight.dtype == torch.int8 and layer.scale.shape == (layer.out_features,) for layer in layers)
    assert min(int(layer.qweight.min()) for layer in layers) == -127  # torchao's -128 clamped: symmetric int8


def test_one_int8_row_matches_the_dequantized_weight() -> None:
    layer = apply_weight_format(tiny_model(), "int8").layers[0].mlp.gate_up
    row = torch.randn(1, 1, layer.in_features)
    with torch.inference_mode():
        expected = row @ layer.dequantized().t()
        one = layer(row)
        assert torch.allclose(one, expected, rtol=0.02, atol=0.02 * expected.abs().max().item())
        # Nine rows (a batch of slots) and a prompt's 40 round and sum each row as one row does.
        assert torch.allclose(layer(row.expand(1, 9, -1)), one.expand(1, 9, -1), rtol=1e-4, atol=1e-5)
        assert torch.allclose(layer(row.expand(1, 40, -1)), one.expand(1, 40, -1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weights", ["fp32", "int8", pytest.param("bf16", marks=needs_bf16)])
def test_each_format_loads_from_a_run_and_generates(tiny_run, weights: str) -> None:
    chat_model = ChatModel.from_run(load_run(tiny_run), weights=weights)
    assert weight_format(chat_model.decoder.model) == weights
    settings = GenerationConfig(temperature=0.0, max_new_tokens=6)
    reply = chat_model.stream("Once upon a time", settings)
    assert "".join(reply) and chat_model.stats.generated_tokens >= 1


def test_the_run_config_sets_the_default_format(tiny_run) -> None:
    loaded = load_run(tiny_run)
    loaded.config.inference.weights = "int8"
    assert weight_format(ChatModel.from_run(loaded).decoder.model) == "int8"


@needs_bf16
def test_bf16_without_native_bf16_stores_the_linear_weights_in_bf16_and_computes_in_fp32(monkeypatch) -> None:
    monkeypatch.setattr(weight_formats, "cpu_has_native_bf16", lambda: False)
    reference = tiny_model()
    converted = apply_weight_format(copy.deepcopy(reference), "bf16")
    assert weight_format(converted) == "bf16"
    assert all(parameter.dtype == torch.float32 for parameter in converted.parameters())  # norms, embedding table
    layers = [module for module in converted.modules() if isinstance(module, Bf16WeightLinear)]
    assert len(layers) == 4 * 2 + 1 and all(layer.weight.dtype == torch.bfloat16 for layer in layers)
    rounded = copy.deepcopy(reference)  # the same model with its linear weights rounded to bf16, all in fp32
    for module in rounded.modules():
        if isinstance(module, torch.nn.Linear):  # a new parameter each: a head tied to the table leaves it unrounded
            module.weight = torch.nn.Parameter(module.weight.detach().bfloat16().float())
    ids = torch.randint(0, 256, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = rounded(ids)
        prefilled = converted(ids)
    assert prefilled.dtype == torch.float32
    torch.testing.assert_close(prefilled, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    torch.testing.assert_close(decoded_logits(converted, ids), expected, rtol=1e-4,
                               atol=1e-4 * expected.abs().max().item())


def test_bf16_on_a_cpu_without_native_bf16_or_avx2_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setattr(weight_formats, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(weight_formats, "cpu_has_flag", lambda *flags: False)
    with pytest.raises(CogniError, match=r"--weights bf16: this CPU has neither native bf16.*nor AVX2.*int8 or fp32"):
        apply_weight_format(tiny_model(), "bf16")


def test_unknown_format_and_missing_torchao_are_one_clear_line(monkeypatch) -> None:
    with pytest.raises(CogniError, match="--weights 'int4': choose one of fp32, bf16, int8"):
        apply_weight_format(tiny_model(), "int4")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # as if torchao were not installed
    with pytest.raises(CogniError, match=r"int8 needs torchao: pip install 'cognimamba\[cpu-int8\]'"):
        apply_weight_format(tiny_model(), "int8")
