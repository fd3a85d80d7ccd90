"""Name, shape and config mapping between our LanguageModel and Hugging Face's Llama, Qwen 2, Qwen 3 and Gemma 3.

Our projections are fused (q/k/v in one matrix, gate/up in another); transformers keeps them apart. All four
use the "rotate half" RoPE layout, so no permutation of q/k rows is needed for transformers (GGUF needs one).
A run's `model.family` says which architecture it is (empty: a Llama); the options that architecture fixes
(config/schema.py's FAMILY_FIXED) must have its values, or export refuses by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer

from cognimamba.config.schema import FAMILY_FIXED, FAMILY_PRESETS, ModelConfig
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, PAD


@dataclass(frozen=True)
class HfFamily:
    """One Hugging Face architecture: its class, its config's model_type and its activation's name."""

    architecture: str
    model_type: str
    activation: str


HF_FAMILIES = {
    "llama": HfFamily("LlamaForCausalLM", "llama", "silu"),
    "qwen2": HfFamily("Qwen2ForCausalLM", "qwen2", "silu"),
    "qwen3": HfFamily("Qwen3ForCausalLM", "qwen3", "silu"),
    "gemma3": HfFamily("Gemma3ForCausalLM", "gemma3_text", "gelu_pytorch_tanh"),
}
# Gemma 3's vision-language checkpoints: the text tower imports, the vision tower is left behind.
GEMMA3_MULTIMODAL = "Gemma3ForConditionalGeneration"
SUPPORTED = ", ".join([*(family.architecture for family in HF_FAMILIES.values()), f"{GEMMA3_MULTIMODAL}'s text tower"])
ROPE_TYPES = ("default", "linear", "llama3")


def export_family(config: ModelConfig) -> str:
    return config.family or "llama"


def shown(value: Any) -> str:
    """A config value as --set spells it."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_exportable(config: ModelConfig) -> None:
    """Options the run's family's transformers architecture cannot express are refused by name."""
    family = export_family(config)
    architecture = HF_FAMILIES[family].architecture
    for name in FAMILY_FIXED[family]:
        value, expected = getattr(config, name), FAMILY_PRESETS[family][name]
        if value != expected:
            raise CogniError(f"model.{name} = {shown(value)} cannot be exported: transformers' {architecture} fixes "
                             f"it at {shown(expected)} (set model.family to the family this run is, if it is one)")


check_llama_compatible = check_exportable  # the name benchmarks/compare_hf.py and older callers use


def rope_parameters(config: ModelConfig, theta: float, scaled: bool) -> dict[str, Any]:
    """transformers' rope_parameters for one kind of layer (5.x; 4.x reads rope_theta and rope_scaling)."""
    if not scaled or config.rope_scaling == "none":
        return {"rope_type": "default", "rope_theta": theta}
    parameters: dict[str, Any] = {"rope_type": config.rope_scaling, "rope_theta": theta,
                                  "factor": config.rope_scaling_factor}
    if config.rope_scaling == "llama3":
        parameters.update(low_freq_factor=config.rope_low_freq_factor, high_freq_factor=config.rope_high_freq_factor,
                          original_max_position_embeddings=config.rope_original_max_len)
    return parameters


def rope_scaling_4x(parameters: dict[str, Any]) -> dict[str, Any] | None:
    if parameters["rope_type"] == "default":
        return None
    return {key: value for key, value in parameters.items() if key != "rope_theta"} | {"type": parameters["rope_type"]}


def family_fields(config: ModelConfig, family: str) -> dict[str, Any]:
    """What one family's config.json says beyond the shapes every family shares."""
    global_rope = rope_parameters(config, config.rope_theta, scaled=True)
    if family != "gemma3":
        fields: dict[str, Any] = {"hidden_act": "silu", "rope_theta": global_rope["rope_theta"],
                                  "rope_parameters": global_rope, "rope_scaling": rope_scaling_4x(global_rope),
                                  "attention_bias": config.qkv_bias if family == "qwen2" else False}
        if family == "llama":
            return fields | {"mlp_bias": False}
        return fields | {"use_sliding_window": False, "sliding_window": None, "max_window_layers": config.n_layers}
    local_rope = rope_parameters(config, config.rope_theta_local, scaled=False)
    scalar = config.attention_scale or config.attention_head_dim
    scalar = int(scalar) if float(scalar).is_integer() else scalar  # transformers 5 checks it is an int
    layer_types = ["sliding_attention" if config.is_sliding_layer(layer) else "full_attention"
                   for layer in range(config.n_layers)]
    return {
        "hidden_activation": "gelu_pytorch_tanh", "attention_bias": False,
        "query_pre_attn_scalar": scalar,
        "sliding_window": config.sliding_window or None, "layer_types": layer_types,
        "sliding_window_pattern": config.full_attention_every,  # transformers 4.x
        "rope_parameters": {"full_attention": global_rope, "sliding_attention": local_rope},
        "rope_theta": config.rope_theta, "rope_local_base_freq": config.rope_theta_local,  # transformers 4.x
        "rope_scaling": rope_scaling_4x(global_rope),
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
    }


def hf_model_config(config: ModelConfig, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """A `config.json` for the run's family's *ForCausalLM that both transformers 4.x and 5.x read."""
    check_exportable(config)
    family = export_family(config)
    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.token_to_id(END_OF_TEXT), "eos_token_id": tokenizer.token_to_id(IM_END),
                   "pad_token_id": tokenizer.token_to_id(PAD)}
    return {
        "architectures": [HF_FAMILIES[family].architecture],
        "model_type": HF_FAMILIES[family].model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.attention_head_dim,
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        **family_fields(config, family),
        "attention_dropout": 0.0,
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": config.init_std,
        "torch_dtype": "float32",
        "use_cache": True,
        **special,
    }


hf_llama_config = hf_model_config  # the name benchmarks/compare_hf.py uses


def layer_names(config: ModelConfig) -> dict[str, str]:
    """Per-layer tensors that map one to one: our name -> transformers' (after `layers.N.` / `model.layers.N.`)."""
    names = {"attention.proj.weight": "self_attn.o_proj.weight", "mlp.down.weight": "mlp.down_proj.weight",
             "attention_norm.weight": "input_layernorm.weight"}
    if config.norm_scheme == "sandwich":
        names.update({"attention_post_norm.weight": "post_attention_layernorm.weight",
                      "mlp_norm.weight": "pre_feedforward_layernorm.weight",
                      "mlp_post_norm.weight": "post_feedforward_layernorm.weight"})
    else:  # Llama's "post-attention" norm is the one before the MLP
        names["mlp_norm.weight"] = "post_attention_layernorm.weight"
    if config.qk_norm:
        names.update({"attention.q_norm.weight": "self_attn.q_norm.weight",
                      "attention.k_norm.weight": "self_attn.k_norm.weight"})
    return names


def to_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict (as saved: tied lm_head omitted) -> transformers' names, projections split."""
    qkv_rows = [config.q_dim, config.kv_dim, config.kv_dim]
    hf: dict[str, torch.Tensor] = {"model.embed_tokens.weight": state["tok_embeddings.weight"],
                                   "model.norm.weight": state["norm.weight"]}
    if not config.tie_embeddings:
        hf["lm_head.weight"] = state["lm_head.weight"]
    for layer in range(config.n_layers):
        ours, theirs = f"layers.{layer}", f"model.layers.{layer}"
        for kind in ("weight", "bias") if config.qkv_bias else ("weight",):
            q, k, v = state[f"{ours}.attention.qkv.{kind}"].split(qkv_rows, dim=0)
            hf.update({f"{theirs}.self_attn.q_proj.{kind}": q, f"{theirs}.self_attn.k_proj.{kind}": k,
                       f"{theirs}.self_attn.v_proj.{kind}": v})
        gate, up = state[f"{ours}.mlp.gate_up.weight"].chunk(2, dim=0)
        hf.update({f"{theirs}.mlp.gate_proj.weight": gate, f"{theirs}.mlp.up_proj.weight": up})
        hf.update({f"{theirs}.{name}": state[f"{ours}.{mine}"] for mine, name in layer_names(config).items()})
    return {name: tensor.contiguous() for name, tensor in hf.items()}


def text_tower(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Gemma3ForConditionalGeneration's language model under Gemma3ForCausalLM's names (transformers 5 saves
    `model.language_model.*`, 4.x `language_model.model.*`); other checkpoints' names pass unchanged. What is
    left (the vision tower, its projector) is never read."""
    renames = (("model.language_model.", "model."), ("language_model.model.", "model."),
               ("language_model.lm_head.", "lm_head."))
    renamed = {}
    for name, tensor in hf.items():
        prefix = next((pair for pair in renames if name.startswith(pair[0])), None)
        renamed[prefix[1] + name.removeprefix(prefix[0]) if prefix else name] = tensor
    return renamed


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers' weights -> our names, projections fused (the inverse of to_hf_state_dict)."""
    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise CogniError(f"checkpoint has no tensor {name}; not a complete "
                             f"{HF_FAMILIES[export_family(config)].architecture} checkpoint")
        return hf[name]

    state = {"tok_embeddings.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    if not config.tie_embeddings:
        state["lm_head.weight"] = take("lm_head.weight")
    for layer in range(config.n_layers):
        ours, theirs = f"layers.{layer}", f"model.layers.{layer}"
        for kind in ("weight", "bias") if config.qkv_bias else ("weight",):
            state[f"{ours}.attention.qkv.{kind}"] = torch.cat([take(f"{theirs}.self_attn.{p}_proj.{kind}")
                                                               for p in "qkv"])
        state[f"{ours}.mlp.gate_up.weight"] = torch.cat([take(f"{theirs}.mlp.gate_proj.weight"),
                                                         take(f"{theirs}.mlp.up_proj.weight")])
        state.update({f"{ours}.{mine}": take(f"{theirs}.{name}") for mine, name in layer_names(config).items()})
    return {name: tensor.contiguous() for name, tensor in state.items()}
