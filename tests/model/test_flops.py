"""`flops_per_token`, the numerator of MFU, against a count made by hand from the model's own layers."""

from __future__ import annotations

from torch import nn

from cognimamba.config.schema import ModelConfig
from cognimamba.model.transformer import LanguageModel, flops_per_token

CONFIG = ModelConfig(vocab_size=100, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=32)


def matmul_weights(model: nn.Module) -> int:
    """Multiply-adds per token of every projection: one per weight of each linear layer (the tied head too)."""
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, nn.Linear))


def attention_multiply_adds(config: ModelConfig, seq_len: int, causal: bool) -> int:
    """QK^T and AV of one sequence, every layer: each head scores `seq_len` queries against its keys, then
    weights as many values; a causal mask leaves query t only t keys."""
    keys_read = seq_len * (seq_len + 1) // 2 if causal else seq_len * seq_len
    per_layer = 2 * config.n_heads * keys_read * config.attention_head_dim  # scores, then the weighted sum of values
    return config.n_layers * per_layer


def test_flops_per_token_is_palm_count_of_the_real_layers():
    """6 FLOPs per multiply-add and weight (2 forward, 4 backward), attention counted over the whole sequence."""
    model = LanguageModel(CONFIG)
    seq_len = CONFIG.max_seq_len
    by_hand = 6 * matmul_weights(model) + 6 * attention_multiply_adds(CONFIG, seq_len, causal=False) / seq_len
    assert flops_per_token(CONFIG, seq_len) == by_hand


def test_the_attention_term_is_twice_what_a_causal_mask_computes():
    """The convention PaLM and nanoGPT use (12*L*T*d), so MFU compares with theirs; the causal work is about half."""
    seq_len = CONFIG.max_seq_len
    attention_flops = flops_per_token(CONFIG, seq_len) - flops_per_token(CONFIG, 1) + 12 * CONFIG.n_layers * CONFIG.dim
    assert attention_flops == 12 * CONFIG.n_layers * seq_len * CONFIG.dim
    causal = 6 * attention_multiply_adds(CONFIG, seq_len, causal=True) / seq_len
    assert attention_flops / causal == 2 * seq_len / (seq_len + 1)
