import dataclasses

import pytest
import torch
import torch.nn.functional as F

from cognimamba.config.profiles import parameter_counts
from cognimamba.config.schema import ModelConfig, apply_family
from cognimamba.model.transformer import (
    DecodeCache,
    LanguageModel,
    SlotStep,
    apply_rope,
    num_parameters,
    rope_inverse_frequencies,
    rope_tables,
)


def tiny(**overrides) -> ModelConfig:
    settings = {"vocab_size": 97, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
                "max_seq_len": 48}
    return ModelConfig(**{**settings, **overrides})


def model_for(config: ModelConfig) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(config).eval()


def test_rope_matches_rotate_half_reference() -> None:
    cos, sin = rope_tables(8, 16, 10000.0)
    x = torch.randn(1, 2, 16, 8, generator=torch.Generator().manual_seed(0))
    # Reference: HF Llama's rotate_half with inv_freq = 1 / theta^(2i/d).
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 8, 2).float() / 8))
    angles = torch.outer(torch.arange(16).float(), inv_freq)
    emb = torch.cat([angles, angles], dim=-1)
    rotated = torch.cat([-x[..., 4:], x[..., :4]], dim=-1)
    expected = x * emb.cos() + rotated * emb.sin()
    torch.testing.assert_close(apply_rope(x, cos, sin), expected, atol=1e-5, rtol=1e-5)


def test_rope_is_relative() -> None:
    """Scores between a query at i and key at j depend only on i - j."""
    cos, sin = rope_tables(8, 32, 10000.0)
    q, k = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    def score(i: int, j: int) -> float:
        return float(apply_rope(q, cos[i], sin[i]) @ apply_rope(k, cos[j], sin[j]))
    assert score(5, 2) == pytest.approx(score(20, 17), abs=1e-4)


def test_gqa_equals_repeated_kv_attention() -> None:
    config = tiny()
    model = model_for(config)
    attention = model.layers[0].attention
    x = torch.randn(2, 10, config.dim)
    cos, sin = model.rope_cos[:10], model.rope_sin[:10]  # [time, 1, head_dim]
    out = attention(x, cos, sin, None, None, 0)
    # Reference: expand each KV head to its query heads and use plain causal softmax attention.
    q, k, v = attention.qkv(x).split([32, 16, 16], dim=-1)
    q = q.view(2, 10, 4, 8).transpose(1, 2)
    k = k.view(2, 10, 2, 8).transpose(1, 2)
    v = v.view(2, 10, 2, 8).transpose(1, 2)
    cos, sin = cos.squeeze(1), sin.squeeze(1)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ k.transpose(-1, -2)) / 8**0.5
    scores = scores.masked_fill(torch.triu(torch.ones(10, 10, dtype=torch.bool), 1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 10, -1)
    torch.testing.assert_close(out, attention.proj(y), atol=1e-5, rtol=1e-5)


def test_causality() -> None:
    model = model_for(tiny())
    ids = torch.randint(0, 97, (1, 20))
    changed = ids.clone()
    changed[0, 15] = (ids[0, 15] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def family(name: str, **overrides) -> ModelConfig:
    """A tiny model of a family's preset, as `--set model.family=NAME` makes one."""
    config = tiny(**overrides)
    apply_family(config, name)
    return dataclasses.replace(config, **overrides)


@pytest.mark.parametrize("options", [
    {}, {"qk_norm": True}, {"sliding_window": 6, "full_attention_every": 2, "rope_theta_local": 1000.0},
    {"family": "qwen2"}, {"family": "qwen3", "head_dim": 16}, {"rope_scaling": "llama3", "rope_scaling_factor": 8.0,
                                                             "rope_original_max_len": 16},
    {"family": "gemma3", "sliding_window": 6, "full_attention_every": 3, "head_dim": 12, "attention_scale": 10.0,
     "rope_scaling": "linear", "rope_scaling_factor": 2.0}])
def test_kv_cache_equals_full_forward(options: dict) -> None:
    config = family(options["family"], **options) if "family" in options else tiny(**options)
    model = model_for(config)
    ids = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        full = model(ids)
        cache = DecodeCache(config, batch_size=2)
        pieces = [model(ids[:, :7], cache=cache, start=0)]  # prefill
        pieces.append(model(ids[:, 7:12], cache=cache, start=7))  # a chunk
        pieces += [model(ids[:, i:i + 1], cache=cache, start=i) for i in range(12, 30)]  # token by token
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_sliding_window_limits_what_a_layer_sees() -> None:
    config = tiny(sliding_window=4, full_attention_every=100, n_layers=1)  # the one layer is local
    model = model_for(config)
    ids = torch.randint(0, 97, (1, 16))
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, 4:], b[:, 4:])  # position 4+ cannot see token 0 through one local layer


def test_tied_embeddings_and_parameter_counts() -> None:
    model = model_for(tiny())
    assert model.lm_head.weight is model.tok_embeddings.weight
    total, non_embedding = num_parameters(model)
    assert total == sum(p.numel() for p in model.parameters())
    assert total - non_embedding == 97 * 32
    untied = model_for(tiny(tie_embeddings=False))
    total_untied, non_embedding_untied = num_parameters(untied)
    assert total_untied - non_embedding_untied == 2 * 97 * 32
    assert non_embedding_untied == non_embedding


def test_residual_projections_get_scaled_init() -> None:
    config = tiny(n_layers=8, dim=128, ffn_dim=256, n_heads=4)
    model = model_for(config)
    plain = model.layers[0].attention.qkv.weight.std().item()
    scaled = model.layers[0].attention.proj.weight.std().item()
    assert scaled == pytest.approx(plain / 4, rel=0.1)  # 1 / sqrt(2 * 8)


def test_rmsnorm_computes_in_fp32() -> None:
    model = model_for(tiny())
    x = (torch.randn(2, 5, 32) * 100).to(torch.bfloat16)
    out = model.norm(x)
    assert out.dtype == torch.bfloat16
    reference = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.02)


def test_too_long_sequence_is_refused() -> None:
    model = model_for(tiny())
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        model(torch.zeros((1, 49), dtype=torch.long))


def test_default_options_build_the_same_llama() -> None:
    """The family options at their defaults add nothing: the same parameters, so old runs load unchanged."""
    names = [name for name, _ in model_for(tiny()).named_parameters()]
    assert names[:5] == ["tok_embeddings.weight", "layers.0.attention_norm.weight", "layers.0.attention.qkv.weight",
                         "layers.0.attention.proj.weight", "layers.0.mlp_norm.weight"]
    assert not any(name.endswith(("bias", "post_norm.weight", "q_norm.weight")) for name in names)


def test_gemma_options_build_its_layer() -> None:
    config = family("gemma3", head_dim=16)
    model = model_for(config)
    block = model.layers[0]
    assert block.attention.qkv.weight.shape == (4 * 16 + 2 * 2 * 16, 32)  # head_dim 16, not dim / n_heads = 8
    assert block.attention.proj.weight.shape == (32, 64)
    assert block.attention_post_norm is not None and block.mlp_post_norm is not None
    # (1 + w) norms start at w = 0: a norm that scales by one, as every other family's starts
    assert torch.equal(block.attention_post_norm.weight, torch.zeros(32))
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(block.attention_post_norm(x), F.rms_norm(x, (32,), eps=config.norm_eps))
    torch.testing.assert_close(model.embed(torch.tensor([5])), model.tok_embeddings.weight[5:6] * 32 ** 0.5)
    assert num_parameters(model) == parameter_counts(config)


def test_qwen2_biases_only_q_k_v() -> None:
    model = model_for(family("qwen2"))
    assert model.layers[0].attention.qkv.bias.shape == (32 + 2 * 16,)
    assert model.layers[0].attention.proj.bias is None and not model.layers[0].attention.qkv.bias.any()
    assert num_parameters(model) == parameter_counts(family("qwen2"))


def test_llama3_rope_scaling_keeps_fast_frequencies_and_slows_the_slow() -> None:
    config = tiny(rope_scaling="llama3", rope_scaling_factor=8.0, rope_original_max_len=64, dim=128)
    plain = rope_inverse_frequencies(32, 10000.0)
    scaled = rope_inverse_frequencies(32, 10000.0, config)
    wavelength = 2 * torch.pi / plain
    assert torch.equal(scaled[wavelength < 64 / 4], plain[wavelength < 64 / 4])
    torch.testing.assert_close(scaled[wavelength > 64], plain[wavelength > 64] / 8)
    linear = rope_inverse_frequencies(32, 10000.0, dataclasses.replace(config, rope_scaling="linear"))
    torch.testing.assert_close(linear, plain / 8)


def test_slot_decoding_of_a_gemma_model_equals_the_full_forward() -> None:
    """The batching engine's per-row step (embedding scale, sandwich norms, windows) as the plain forward."""
    config = family("gemma3", sliding_window=5, full_attention_every=2)
    model = model_for(config)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = DecodeCache(config, batch_size=2)
        model(ids[:, :9], cache=cache, start=0)
        step = SlotStep(cache, torch.tensor([0, 1]), torch.tensor([9, 9]))
        logits = model.decode_slots(ids[:, 9:10], step)
    torch.testing.assert_close(logits, full[:, 9], atol=1e-5, rtol=1e-5)


def test_a_bf16_models_decoded_token_attends_in_fp32_and_matches_its_full_forward(monkeypatch) -> None:
    """On CPU one decoded token's attention widens bf16 queries, keys and values to fp32 (PyTorch's bf16 kernel is
    several times slower there); the step, alone or as a batch engine's rows, still gives the full pass's logits."""
    config = tiny(sliding_window=5, full_attention_every=2)
    model = model_for(config).to(torch.bfloat16)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    attention = F.scaled_dot_product_attention
    seen: list[tuple[int, torch.dtype, torch.dtype]] = []

    def recording(q, k, v, **options):
        y = attention(q, k, v, **options)
        seen.append((q.size(2), q.dtype, k.dtype))
        return y

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    with torch.no_grad():
        full = model(ids).float()
        cache = DecodeCache(config, batch_size=2, dtype=torch.bfloat16)
        model(ids[:, :9], cache=cache, start=0)
        alone = DecodeCache(config, batch_size=1, dtype=torch.bfloat16)
        model(ids[:1, :9], cache=alone, start=0)
        one = model(ids[:1, 9:10], cache=alone, start=9)
        rows = model.decode_slots(ids[:, 9:10], SlotStep(cache, torch.tensor([0, 1]), torch.tensor([9, 9])))
    assert {(q, k) for length, q, k in seen if length == 1} == {(torch.float32, torch.float32)}
    assert {(q, k) for length, q, k in seen if length > 1} == {(torch.bfloat16, torch.bfloat16)}
    assert one.dtype == rows.dtype == torch.bfloat16
    tolerance = 0.02 * full.abs().max().item()
    torch.testing.assert_close(rows.float(), full[:, 9], atol=tolerance, rtol=0)
    torch.testing.assert_close(one.float()[0, -1], full[0, 9], atol=tolerance, rtol=0)
