"""A Hugging Face checkpoint's config.json read as a ModelConfig, or refused by name.

Which family a checkpoint is comes from its `architectures` (else its `model_type`); each option our
LanguageModel has is read from the fields transformers 4.x or 5.x writes (`rope_theta` and `rope_scaling`, or
`rope_parameters`, per layer type for Gemma 3). Whatever our LanguageModel would compute differently (biases
Llama has on its output, logit soft-capping, a sliding-window Qwen, mixture-of-experts layers, a vision tower
alone) is refused by name rather than approximated.
"""

from __future__ import annotations

from typing import Any

from cognimamba.config.schema import ModelConfig, apply_family
from cognimamba.errors import CogniError
from cognimamba.interop.hf_names import GEMMA3_MULTIMODAL, HF_FAMILIES, ROPE_TYPES, SUPPORTED

# model_type -> family, for configs that name no architecture.
MODEL_TYPES = {family.model_type: name for name, family in HF_FAMILIES.items()} | {"gemma3": "gemma3"}


def checkpoint_family(hf: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(family, the text model's config) of a config.json, or a one-line refusal naming what it is."""
    architectures = [str(name) for name in hf.get("architectures") or []]
    model_type = str(hf.get("model_type") or "")
    named = architectures[0] if architectures else model_type
    shown = f"{named} ({model_type})" if model_type and model_type != named else named or "unknown"
    if "moe" in named.lower() or "moe" in model_type or hf.get("num_experts") or hf.get("num_local_experts"):
        raise CogniError(f"unsupported architecture {shown}: mixture-of-experts models cannot be imported; "
                         f"cognimamba imports {SUPPORTED}")
    if named == GEMMA3_MULTIMODAL or (not architectures and model_type == "gemma3"):
        text = hf.get("text_config")
        if not isinstance(text, dict):
            raise CogniError(f"{GEMMA3_MULTIMODAL}: config.json has no text_config")
        return "gemma3", text
    for family, spec in HF_FAMILIES.items():
        if named in (spec.architecture, spec.model_type):
            return family, hf
    if named.endswith("ForConditionalGeneration") or hf.get("vision_config"):
        raise CogniError(f"unsupported architecture {shown}: its vision tower cannot be imported; cognimamba "
                         f"imports {SUPPORTED}")
    raise CogniError(f"unsupported architecture {shown}: cognimamba imports {SUPPORTED}")


def read_rope(parameters: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """One layer type's RoPE settings, with its type checked against the ones our LanguageModel computes."""
    parameters = dict(parameters or {})
    rope_type = parameters.get("rope_type") or parameters.get("type") or "default"
    if rope_type not in ROPE_TYPES:
        raise CogniError(f"config.json: {where} uses RoPE scaling of type {rope_type!r}, which cognimamba does not "
                         f"implement (it has {', '.join(ROPE_TYPES)})")
    return {**parameters, "rope_type": rope_type}


def rope_settings(hf: dict[str, Any], family: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(global layers' RoPE, sliding-window layers') from either transformers version's fields."""
    parameters = hf.get("rope_parameters") or {}
    if family != "gemma3":
        if not parameters or "rope_type" not in parameters:
            parameters = {**(hf.get("rope_scaling") or {}), "rope_theta": hf.get("rope_theta", 10000.0)}
        rope = read_rope(parameters, "rope_parameters")
        return rope, rope
    full = parameters.get("full_attention") or {**(hf.get("rope_scaling") or {}),
                                                "rope_theta": hf.get("rope_theta", 1_000_000.0)}
    local = parameters.get("sliding_attention") or {"rope_theta": hf.get("rope_local_base_freq", 10_000.0)}
    local = read_rope(local, "rope_parameters.sliding_attention")
    if local["rope_type"] != "default":
        raise CogniError("config.json: RoPE scaling on sliding-window layers is not supported")
    return read_rope(full, "rope_parameters.full_attention"), local


def apply_rope(model: ModelConfig, rope: dict[str, Any], local: dict[str, Any]) -> None:
    model.rope_theta = float(rope.get("rope_theta") or 10000.0)
    model.rope_theta_local = float(local.get("rope_theta") or model.rope_theta)
    model.rope_scaling = "none" if rope["rope_type"] == "default" else rope["rope_type"]
    if model.rope_scaling != "none":
        model.rope_scaling_factor = float(rope["factor"])
    if model.rope_scaling == "llama3":
        model.rope_low_freq_factor = float(rope["low_freq_factor"])
        model.rope_high_freq_factor = float(rope["high_freq_factor"])
        model.rope_original_max_len = int(rope["original_max_position_embeddings"])


def refuse_what_differs(hf: dict[str, Any], family: str) -> None:
    """Options of these architectures our LanguageModel does not compute, by name."""
    activation = hf.get("hidden_activation") or hf.get("hidden_act") or HF_FAMILIES[family].activation
    if activation != HF_FAMILIES[family].activation:
        raise CogniError(f"config.json: hidden_act {activation!r} is not supported for "
                         f"{HF_FAMILIES[family].architecture}; it computes {HF_FAMILIES[family].activation!r}")
    flags = ["mlp_bias", "final_logit_softcapping", "attn_logit_softcapping", "use_bidirectional_attention",
             "use_sliding_window"]
    if family != "qwen2":  # Qwen 2's q/k/v biases are qkv_bias; elsewhere attention_bias biases o_proj too
        flags.append("attention_bias")
    for flag in flags:
        if hf.get(flag):
            raise CogniError(f"config.json sets {flag} = {hf[flag]}, which cognimamba's "
                             f"{HF_FAMILIES[family].architecture} does not implement")


def sliding_pattern(hf: dict[str, Any], n_layers: int) -> tuple[int, int]:
    """Gemma 3's (sliding_window, full_attention_every) from layer_types (or 4.x's sliding_window_pattern)."""
    window = int(hf.get("sliding_window") or 0)
    pattern = int(hf.get("sliding_window_pattern") or 6)
    types = hf.get("layer_types") or ["sliding_attention" if (layer + 1) % pattern else "full_attention"
                                      for layer in range(n_layers)]
    if not window or "sliding_attention" not in types:
        return 0, 1
    full = [layer for layer, kind in enumerate(types) if kind == "full_attention"]
    every = full[0] + 1 if full else n_layers + 1
    expected = ["sliding_attention" if (layer + 1) % every else "full_attention" for layer in range(n_layers)]
    if list(types) != expected:
        raise CogniError(f"config.json: layer_types {types} is not every Nth layer global, which is the pattern "
                         "cognimamba computes")
    return window, every


def model_config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """ModelConfig for a supported architecture's config.json; anything else is a one-line error."""
    family, text = checkpoint_family(hf)
    refuse_what_differs(text, family)
    model = ModelConfig()
    apply_family(model, family)
    heads, dim = int(text["num_attention_heads"]), int(text["hidden_size"])
    model.vocab_size, model.dim, model.n_heads = int(text["vocab_size"]), dim, heads
    model.n_layers, model.ffn_dim = int(text["num_hidden_layers"]), int(text["intermediate_size"])
    model.n_kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or dim // heads)
    model.head_dim = 0 if head_dim * heads == dim else head_dim
    model.max_seq_len = int(text.get("max_position_embeddings", 2048))
    model.norm_eps = float(text.get("rms_norm_eps", 1e-6))
    model.tie_embeddings = bool(text.get("tie_word_embeddings", hf.get("tie_word_embeddings", family == "gemma3")))
    model.init_std = float(text.get("initializer_range", 0.02))
    apply_rope(model, *rope_settings(text, family))
    if family == "gemma3":
        model.attention_scale = float(text.get("query_pre_attn_scalar") or head_dim)
        model.sliding_window, model.full_attention_every = sliding_pattern(text, model.n_layers)
    return model
