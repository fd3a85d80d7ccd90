"""Name and shape mapping between our Transformer and Hugging Face `LlamaForCausalLM`.

Our projections are fused (q/k/v in one matrix, gate/up in another); Llama keeps them apart. Both use the
"rotate half" RoPE layout, so no permutation of q/k rows is needed for transformers (GGUF needs one).
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer

from cognimamba.config.schema import ModelConfig
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, PAD


def check_llama_compatible(config: ModelConfig) -> None:
    """Options transformers' Llama cannot express are refused by name."""
    if config.qk_norm:
        raise CogniError("model.qk_norm = true cannot be exported: transformers' Llama has no QK-norm")
    if config.sliding_window:
        raise CogniError("model.sliding_window is set: hybrid sliding-window layers with their own RoPE theta "
                         "cannot be expressed by transformers' Llama")


def hf_llama_config(config: ModelConfig, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """A `config.json` for LlamaForCausalLM that both transformers 4.x and 5.x read."""
    check_llama_compatible(config)
    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.token_to_id(END_OF_TEXT), "eos_token_id": tokenizer.token_to_id(IM_END),
                   "pad_token_id": tokenizer.token_to_id(PAD)}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},  # transformers 5.x
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": config.init_std,
        "torch_dtype": "float32",
        "use_cache": True,
        **special,
    }


def to_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict (as saved: tied lm_head omitted) -> LlamaForCausalLM names, projections split."""
    kv_dim = config.n_kv_heads * config.head_dim
    hf: dict[str, torch.Tensor] = {"model.embed_tokens.weight": state["tok_embeddings.weight"],
                                   "model.norm.weight": state["norm.weight"]}
    if not config.tie_embeddings:
        hf["lm_head.weight"] = state["lm_head.weight"]
    for layer in range(config.n_layers):
        ours, theirs = f"layers.{layer}", f"model.layers.{layer}"
        q, k, v = state[f"{ours}.attention.qkv.weight"].split([config.dim, kv_dim, kv_dim], dim=0)
        gate, up = state[f"{ours}.mlp.gate_up.weight"].chunk(2, dim=0)
        hf.update({
            f"{theirs}.self_attn.q_proj.weight": q, f"{theirs}.self_attn.k_proj.weight": k,
            f"{theirs}.self_attn.v_proj.weight": v,
            f"{theirs}.self_attn.o_proj.weight": state[f"{ours}.attention.proj.weight"],
            f"{theirs}.mlp.gate_proj.weight": gate, f"{theirs}.mlp.up_proj.weight": up,
            f"{theirs}.mlp.down_proj.weight": state[f"{ours}.mlp.down.weight"],
            f"{theirs}.input_layernorm.weight": state[f"{ours}.attention_norm.weight"],
            f"{theirs}.post_attention_layernorm.weight": state[f"{ours}.mlp_norm.weight"],
        })
    return {name: tensor.contiguous() for name, tensor in hf.items()}


def model_config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """ModelConfig for a Llama-architecture config.json; anything else is a clear error."""
    architectures = hf.get("architectures") or []
    if hf.get("model_type") != "llama" and "LlamaForCausalLM" not in architectures:
        raise CogniError(f"unsupported architecture {hf.get('model_type') or architectures}: only Llama "
                         "(LlamaForCausalLM) checkpoints can be imported")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise CogniError(f"config.json sets {flag}: Llama variants with biases are not supported")
    if hf.get("rope_scaling") or (hf.get("rope_parameters") or {}).get("rope_type", "default") != "default":
        raise CogniError("config.json uses RoPE scaling, which cognimamba does not implement")
    heads = int(hf["num_attention_heads"])
    dim = int(hf["hidden_size"])
    head_dim = int(hf.get("head_dim") or dim // heads)
    if head_dim * heads != dim:
        raise CogniError("config.json: head_dim * num_attention_heads != hidden_size is not supported")
    theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta") or 10000.0
    return ModelConfig(
        vocab_size=int(hf["vocab_size"]), dim=dim, n_layers=int(hf["num_hidden_layers"]), n_heads=heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or heads), ffn_dim=int(hf["intermediate_size"]),
        max_seq_len=int(hf.get("max_position_embeddings", 2048)), rope_theta=float(theta),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=float(hf.get("initializer_range", 0.02)),
    )


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM weights -> our names, projections fused (the inverse of to_hf_state_dict)."""
    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise CogniError(f"checkpoint has no tensor {name}; not a complete Llama checkpoint")
        return hf[name]

    state = {"tok_embeddings.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    if not config.tie_embeddings:
        state["lm_head.weight"] = take("lm_head.weight")
    for layer in range(config.n_layers):
        ours, theirs = f"layers.{layer}", f"model.layers.{layer}"
        state[f"{ours}.attention.qkv.weight"] = torch.cat([take(f"{theirs}.self_attn.{p}_proj.weight") for p in "qkv"])
        state[f"{ours}.attention.proj.weight"] = take(f"{theirs}.self_attn.o_proj.weight")
        state[f"{ours}.mlp.gate_up.weight"] = torch.cat([take(f"{theirs}.mlp.gate_proj.weight"),
                                                         take(f"{theirs}.mlp.up_proj.weight")])
        state[f"{ours}.mlp.down.weight"] = take(f"{theirs}.mlp.down_proj.weight")
        state[f"{ours}.attention_norm.weight"] = take(f"{theirs}.input_layernorm.weight")
        state[f"{ours}.mlp_norm.weight"] = take(f"{theirs}.post_attention_layernorm.weight")
    return {name: tensor.contiguous() for name, tensor in state.items()}
