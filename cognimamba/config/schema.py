"""The one typed config: model, data, train and generation sections, validated at load.

Profiles (config/profiles.py) are presets of this config; a TOML file and `--set section.field=value`
overrides (config/overrides.py) are applied on top, and everything is checked before any work starts.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from cognimamba.errors import CogniError

# The longest context a config may ask for: no profile or supported import goes past it (Llama 3.x declares
# 131072), yet a copied config.json can no longer make loading allocate position tables of gigabytes.
MAX_CONTEXT_LENGTH = 131_072

# model.family -> the options that make a model that family's, plus its usual RoPE theta and norm eps. Sizes (dim,
# layers, heads, head_dim, vocabulary) and RoPE scaling vary between a family's checkpoints and are not part of
# the preset: a profile or a checkpoint's config.json sets them. Gemma 3's window and thetas are its release's.
FAMILY_PRESETS: dict[str, dict[str, Any]] = {
    "llama": {"mlp": "swiglu", "norm_scheme": "pre", "norm_weight_offset": 0.0, "embedding_scale": "none",
              "qkv_bias": False, "qk_norm": False, "attention_scale": 0.0, "sliding_window": 0},
    "qwen2": {"mlp": "swiglu", "norm_scheme": "pre", "norm_weight_offset": 0.0, "embedding_scale": "none",
              "qkv_bias": True, "qk_norm": False, "attention_scale": 0.0, "sliding_window": 0, "norm_eps": 1e-6,
              "rope_theta": 1_000_000.0},
    "qwen3": {"mlp": "swiglu", "norm_scheme": "pre", "norm_weight_offset": 0.0, "embedding_scale": "none",
              "qkv_bias": False, "qk_norm": True, "attention_scale": 0.0, "sliding_window": 0, "norm_eps": 1e-6,
              "rope_theta": 1_000_000.0},
    "gemma3": {"mlp": "geglu_tanh", "norm_scheme": "sandwich", "norm_weight_offset": 1.0,
               "embedding_scale": "sqrt_dim", "qkv_bias": False, "qk_norm": True, "norm_eps": 1e-6,
               "sliding_window": 512, "full_attention_every": 6, "rope_theta": 1_000_000.0,
               "rope_theta_local": 10_000.0, "tie_embeddings": True},
}
# The options a family's architecture cannot change: export refuses a run whose values differ. Gemma's
# attention_scale (query_pre_attn_scalar) and sliding window are written to its config instead.
FAMILY_FIXED = {"llama": ("mlp", "norm_scheme", "norm_weight_offset", "embedding_scale", "qkv_bias", "qk_norm",
                          "attention_scale", "sliding_window"),
                "gemma3": ("mlp", "norm_scheme", "norm_weight_offset", "embedding_scale", "qkv_bias", "qk_norm")}
FAMILY_FIXED["qwen2"] = FAMILY_FIXED["qwen3"] = FAMILY_FIXED["llama"]
FAMILIES = tuple(FAMILY_PRESETS)

# model.fixed_point_preset -> (context updater layers, context_dim, hidden_dim), the New-LLM design's sizes.
FIXED_POINT_PRESETS = {"small": (1, 128, 256), "medium": (2, 256, 512), "large": (4, 512, 1024)}


def spec(default: Any, *, minimum: float | None = None, maximum: float | None = None,
         choices: tuple[Any, ...] | None = None, help: str = "") -> Any:
    """A dataclass field with the range or choices that validation enforces."""
    metadata = {"min": minimum, "max": maximum, "choices": choices, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    vocab_size: int = spec(4096, minimum=16, help="taken from the tokenizer at train time")
    dim: int = spec(256, minimum=8)
    n_layers: int = spec(6, minimum=1)
    n_heads: int = spec(8, minimum=1)
    n_kv_heads: int = spec(4, minimum=1, help="grouped-query attention: n_heads must be a multiple")
    ffn_dim: int = spec(688, minimum=8)
    max_seq_len: int = spec(256, minimum=8, maximum=MAX_CONTEXT_LENGTH)
    rope_theta: float = spec(10000.0, minimum=1.0)
    norm_eps: float = spec(1e-5, minimum=0.0, maximum=1.0)
    init_std: float = spec(0.02, minimum=0.0)
    dropout: float = spec(0.0, minimum=0.0, maximum=0.9)
    tie_embeddings: bool = spec(True)
    qk_norm: bool = spec(False, help="RMSNorm on queries and keys per head")
    sliding_window: int = spec(0, minimum=0, help="0 = full attention in every layer")
    full_attention_every: int = spec(4, minimum=1, help="with sliding_window: every Nth layer is global")
    rope_theta_local: float = spec(10000.0, minimum=1.0, help="RoPE theta of sliding-window layers")
    layer_pattern: str = spec("", help="one letter per layer, A = attention, M = Mamba-2 (e.g. MMAMMA); "
                                       "empty = all attention")
    mamba_state_size: int = spec(64, minimum=1, help="Mamba-2: SSM state per head (N)")
    mamba_head_dim: int = spec(64, minimum=1, help="Mamba-2: channels per head (P); mamba_expand * dim must "
                                                   "be a multiple")
    mamba_expand: int = spec(2, minimum=1, help="Mamba-2: inner width as a multiple of dim")
    mamba_conv_width: int = spec(4, minimum=2, help="Mamba-2: causal depthwise convolution kernel")
    mamba_chunk_size: int = spec(64, minimum=1, help="Mamba-2: chunk length of the SSD scan (speed only)")
    arch: str = spec("transformer", choices=("transformer", "fixed_point"),
                     help="transformer (attention and Mamba-2 layers) or fixed_point (New-LLM's context model)")
    fixed_point_preset: str = spec("medium", choices=tuple(FIXED_POINT_PRESETS),
                                   help="fixed_point: small (1 layer, context 128, hidden 256), medium (2, 256, "
                                        "512) or large (4, 512, 1024)")
    fixed_point_layers: int = spec(0, minimum=0, help="fixed_point: context updater layers; 0 = the preset's")
    fixed_point_context_dim: int = spec(0, minimum=0, help="fixed_point: context width; 0 = the preset's")
    fixed_point_hidden_dim: int = spec(0, minimum=0, help="fixed_point: updater and head width; 0 = the preset's")
    fixed_point_threshold: float = spec(1e-3, minimum=0.0, help="fixed_point: a token has converged when its "
                                                                 "context moves less than this (RMS) in a pass")
    fixed_point_max_iterations: int = spec(16, minimum=2, help="fixed_point: passes per phase-1 batch")
    fixed_point_phase1_fraction: float = spec(0.5, minimum=0.0, maximum=1.0,
                                              help="fixed_point: share of training that learns the contexts; "
                                                   "the rest trains the token head on them")
    fixed_point_diversity: float = spec(1.0, minimum=0.0, help="fixed_point: weight of the term that keeps "
                                                               "contexts from collapsing to one vector")
    family: str = spec("", choices=("", *FAMILIES),
                       help="a model family's preset (llama, qwen2, qwen3, gemma3): sets the options below at once, "
                            "and export writes that family's architecture; empty = cognimamba's own (a Llama)")
    head_dim: int = spec(0, minimum=0, help="channels per attention head; 0 = dim / n_heads")
    mlp: str = spec("swiglu", choices=("swiglu", "geglu_tanh"),
                    help="gated MLP activation: SiLU (Llama, Qwen) or tanh-approximated GELU (Gemma)")
    norm_scheme: str = spec("pre", choices=("pre", "sandwich"),
                            help="pre: RMSNorm before attention and MLP; sandwich: before and after both (Gemma 3)")
    norm_weight_offset: float = spec(0.0, minimum=0.0, maximum=1.0,
                                     help="RMSNorm scales by (offset + weight): 1 for Gemma's (1 + w)")
    embedding_scale: str = spec("none", choices=("none", "sqrt_dim"),
                                help="sqrt_dim: embeddings times sqrt(dim) (Gemma)")
    qkv_bias: bool = spec(False, help="biases on the query, key and value projections (Qwen 2)")
    attention_scale: float = spec(0.0, minimum=0.0, help="scores are divided by sqrt(this); 0 = head_dim "
                                                         "(Gemma's query_pre_attn_scalar)")
    rope_scaling: str = spec("none", choices=("none", "linear", "llama3"),
                             help="RoPE frequency scaling of global layers: linear, or Llama 3.1/3.2's llama3")
    rope_scaling_factor: float = spec(1.0, minimum=1.0, help="rope_scaling: how far positions are stretched")
    rope_low_freq_factor: float = spec(1.0, minimum=0.0, help="rope_scaling = llama3: low_freq_factor")
    rope_high_freq_factor: float = spec(4.0, minimum=0.0, help="rope_scaling = llama3: high_freq_factor")
    rope_original_max_len: int = spec(8192, minimum=1, help="rope_scaling = llama3: the context pretrained on")

    @property
    def attention_head_dim(self) -> int:
        """Channels per attention head: model.head_dim, or dim / n_heads where it is 0."""
        return self.head_dim or self.dim // self.n_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.attention_head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.attention_head_dim

    def is_sliding_layer(self, layer: int) -> bool:
        return self.sliding_window > 0 and (layer + 1) % self.full_attention_every != 0

    def is_mamba_layer(self, layer: int) -> bool:
        return self.layer_pattern[layer:layer + 1] == "M"

    @property
    def has_mamba(self) -> bool:
        return "M" in self.layer_pattern

    @property
    def mamba_inner(self) -> int:
        return self.mamba_expand * self.dim

    @property
    def mamba_heads(self) -> int:
        return self.mamba_inner // self.mamba_head_dim

    @property
    def is_fixed_point(self) -> bool:
        return self.arch == "fixed_point"

    @property
    def fixed_point_shape(self) -> tuple[int, int, int]:
        """(updater layers, context_dim, hidden_dim): the preset's, each replaced where set explicitly."""
        preset = FIXED_POINT_PRESETS[self.fixed_point_preset]
        explicit = (self.fixed_point_layers, self.fixed_point_context_dim, self.fixed_point_hidden_dim)
        layers, context_dim, hidden_dim = (mine or theirs for mine, theirs in zip(explicit, preset, strict=True))
        return layers, context_dim, hidden_dim


@dataclass
class DataConfig:
    path: str = spec("", help="a prepared data dir (cogni prepare)")
    seq_len_warmup: list[int] = spec([], help="curriculum of sequence lengths, e.g. [128, 256]")  # noqa: RUF009
    seq_len_warmup_fraction: float = spec(0.3, minimum=0.0, maximum=1.0,
                                          help="share of training spent in the curriculum")
    chat_windows: str = spec("conversations", choices=("conversations", "random"),
                             help="chat data: train on whole conversations from their start, or (to measure what "
                                  "that gives) on windows at random offsets as for text")


@dataclass
class TrainConfig:
    lr: float = spec(3e-3, minimum=0.0, maximum=1.0)
    min_lr_ratio: float = spec(0.1, minimum=0.0, maximum=1.0, help="final lr as a fraction of lr")
    warmup_steps: int = spec(100, minimum=0)
    max_steps: int = spec(2000, minimum=1)
    max_time: str = spec("", help="wall-clock budget such as 10m or 1h30m; the schedule follows time")
    micro_batch_size: int = spec(16, minimum=1)
    grad_accum_steps: int = spec(1, minimum=1)
    weight_decay: float = spec(0.1, minimum=0.0, maximum=1.0)
    dropout_ramp_passes: float = spec(0.0, minimum=0.0,
                                      help="0: model.dropout throughout; N: none in the first pass over the training "
                                           "data, then rising to model.dropout over the next N passes")
    beta1: float = spec(0.9, minimum=0.0, maximum=1.0)
    beta2: float = spec(0.95, minimum=0.0, maximum=1.0)
    grad_clip: float = spec(1.0, minimum=0.0, help="0 disables clipping")
    optimizer: str = spec("adamw", choices=("adamw", "muon"),
                          help="muon: Muon for hidden-layer matrices, AdamW (train.lr) for the rest")
    muon_lr: float = spec(3e-3, minimum=0.0, maximum=1.0, help="Muon's peak rate; follows train.lr's schedule")
    muon_weight_decay: float = spec(0.1, minimum=0.0, maximum=1.0)
    muon_momentum: float = spec(0.95, minimum=0.0, maximum=1.0)
    muon_adjust_lr: str = spec("match_rms_adamw", choices=("match_rms_adamw", "original"),
                               help="match_rms_adamw: AdamW-like rates carry over; original: Keller Jordan's (~0.02)")
    muon_ns_steps: int = spec(5, minimum=1, maximum=20, help="Newton-Schulz iterations per Muon step")
    muon_precision: str = spec("auto", choices=("auto", "fp32", "bf16"),
                               help="Newton-Schulz dtype; auto = bf16 where the hardware has it natively")
    precision: str = spec("auto", choices=("auto", "fp32", "bf16", "fp16"))
    grad_checkpointing: bool = spec(False)
    compile: bool = spec(False, help="torch.compile the model (pays on GPUs, not on small CPUs)")
    device: str = spec("auto", help="auto, cpu, cuda, cuda:N or mps")
    seed: int = spec(1337, minimum=0)
    eval_every: int = spec(200, minimum=0, help="0 = only at the end")
    eval_batches: int = spec(20, minimum=1)
    save_every: int = spec(500, minimum=0, help="0 = only at the end")
    keep_last: int = spec(2, minimum=1, help="step checkpoints kept besides the best")
    log_every: int = spec(10, minimum=1)
    logger: str = spec("none", choices=("none", "tensorboard", "wandb"))
    max_bad_batches: int = spec(0, minimum=0, help="NaN/inf losses skipped before training stops")


# Below this, dividing the logits by the temperature overflows to inf and sampling breaks (here and in
# transformers, which reads the HF export); such a temperature is greedy decoding in all but name anyway.
MIN_SAMPLING_TEMPERATURE = 0.01


@dataclass
class GenerationConfig:
    """How replies are sampled: the run's defaults (generation_config.json), a chat's settings, a decoder's input."""

    temperature: float = spec(0.8, minimum=0.0, maximum=10.0, help=f"0 = greedy; else >= {MIN_SAMPLING_TEMPERATURE}")
    top_k: int = spec(50, minimum=0, help="0 = off")
    top_p: float = spec(0.95, minimum=0.0, maximum=1.0, help="1 = off; 0 = the likeliest token only")
    repetition_penalty: float = spec(1.0, minimum=0.01, maximum=10.0)
    max_new_tokens: int = spec(256, minimum=1)
    seed: int = spec(-1, minimum=-1, help="-1 = random")


WEIGHT_FORMATS = ("fp32", "bf16", "int8")


@dataclass
class InferenceConfig:
    """How chat, serve and bench hold a run's weights (inference/weights.py; `--weights` overrides it), and the
    prompt format chat and serve render (chat/templates.py)."""

    weights: str = spec("fp32", choices=WEIGHT_FORMATS, help="fp32; bf16 (throughout on GPUs and CPUs with "
                        "native bf16, else bf16 weights and fp32 arithmetic); int8 (int8 weights, rows rounded to "
                        "int8 as llama.cpp's q8_0; needs torchao)")
    # chat/templates.py: "auto" is the checkpoint's own template for a run import-hf made (its config.json keeps
    # it), ChatML for a run trained here (fine-tuned runs learned ChatML from prepare's data)
    chat_template: str = spec("auto", choices=("auto", "chatml", "own"),
                              help="the prompt format chat and serve render: auto, chatml, own")


@dataclass
class Config:
    profile: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Config:
        config = cls()
        apply_mapping(config, data, source)
        validate(config)
        return config


SECTIONS = ("model", "data", "train", "generation", "inference")


def _field_types(section: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(section))
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


def _allowed(section_name: str, section: Any) -> str:
    return ", ".join(f"{section_name}.{name}" for name in _field_types(section))


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a TOML/JSON/CLI value to the field's declared type, or raise naming the field."""
    origin = typing.get_origin(annotation)
    if origin in (list, typing.List):  # noqa: UP006
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [part for part in value.replace("[", "").replace("]", "").split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise CogniError(f"{where}: expected a list, got {value!r}")
        return [_coerce(item, item_type, where) for item in value]
    if isinstance(origin, types.UnionType):
        raise TypeError(f"unsupported config type {annotation}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on")
        raise CogniError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise CogniError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise CogniError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise CogniError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise CogniError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise CogniError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {annotation}")


def set_field(config: Config, dotted: str, value: Any, source: str = "--set") -> None:
    """Set `section.field` on the config, converting `value` to the field's type."""
    if dotted == "profile":
        config.profile = str(value)
        return
    section_name, _, name = dotted.partition(".")
    if section_name not in SECTIONS or not name:
        raise CogniError(f"{source}: unknown config key {dotted!r}; keys look like section.field "
                         f"with section one of {', '.join(SECTIONS)}")
    section = getattr(config, section_name)
    field_types = _field_types(section)
    if name not in field_types:
        raise CogniError(f"{source}: unknown config key {dotted!r}; allowed: {_allowed(section_name, section)}")
    value = _coerce(value, field_types[name], f"{source}: {dotted}")
    if dotted == "model.family":
        apply_family(config.model, value, source)
    else:
        setattr(section, name, value)


def apply_mapping(config: Config, data: dict[str, Any], source: str) -> None:
    """Apply a nested mapping (a TOML file or JSON config) onto the config."""
    if not isinstance(data, dict):
        raise CogniError(f"{source}: expected a table of sections")
    for key, value in data.items():
        if key == "profile":
            config.profile = str(value)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise CogniError(f"{source}: [{key}] must be a table")
            # A family's preset first, so the options beside it (a saved run's config.json has them all) win.
            for name, item in sorted(value.items(), key=lambda pair: pair[0] != "family"):
                set_field(config, f"{key}.{name}", item, source)
        else:
            raise CogniError(f"{source}: unknown section {key!r}; allowed: profile, {', '.join(SECTIONS)}")


def validate(config: Config) -> None:
    """Check ranges, choices and cross-field rules; raise one line naming the field."""
    for section_name in SECTIONS:
        section = getattr(config, section_name)
        for item in dataclasses.fields(section):
            value = getattr(section, item.name)
            where = f"{section_name}.{item.name}"
            low, high, choices = item.metadata.get("min"), item.metadata.get("max"), item.metadata.get("choices")
            if choices is not None and value not in choices:
                raise CogniError(f"{where} = {value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
            values = value if isinstance(value, list) else [value]
            for single in values:
                if isinstance(single, int | float) and not isinstance(single, bool):
                    if low is not None and single < low:
                        raise CogniError(f"{where} = {single} is too small; it must be >= {low}")
                    if high is not None and single > high:
                        raise CogniError(f"{where} = {single} is too large; it must be <= {high}")
    model = config.model
    validate_attention_shape(model)
    validate_layer_pattern(model)
    if model.is_fixed_point and model.layer_pattern:
        raise CogniError(f"model.layer_pattern = {model.layer_pattern!r} chooses transformer layers; leave it empty "
                         "with model.arch = fixed_point, whose context updater replaces them")
    if config.train.max_time:
        parse_duration(config.train.max_time, "train.max_time")
    temperature = config.generation.temperature
    if 0 < temperature < MIN_SAMPLING_TEMPERATURE:
        raise CogniError(f"generation.temperature = {temperature:g} is too small to sample with; use 0 for greedy "
                         f"decoding or at least {MIN_SAMPLING_TEMPERATURE}")
    if any(length > model.max_seq_len for length in config.data.seq_len_warmup):
        raise CogniError(f"data.seq_len_warmup {config.data.seq_len_warmup} goes past model.max_seq_len "
                         f"({model.max_seq_len})")


def validate_attention_shape(model: ModelConfig) -> None:
    """Heads that tile the width (unless model.head_dim says otherwise), RoPE's even head, a sane RoPE scaling."""
    if not model.head_dim and model.dim % model.n_heads:
        raise CogniError(f"model.dim ({model.dim}) must be divisible by model.n_heads ({model.n_heads}), or set "
                         "model.head_dim")
    if model.attention_head_dim % 2:
        where = "model.head_dim" if model.head_dim else "model.dim / model.n_heads"
        raise CogniError(f"{where} = {model.attention_head_dim} must be even for RoPE")
    if model.n_heads % model.n_kv_heads:
        raise CogniError(f"model.n_heads ({model.n_heads}) must be a multiple of model.n_kv_heads "
                         f"({model.n_kv_heads})")
    if model.rope_scaling == "llama3" and model.rope_high_freq_factor <= model.rope_low_freq_factor:
        raise CogniError(f"model.rope_high_freq_factor ({model.rope_high_freq_factor:g}) must be above "
                         f"model.rope_low_freq_factor ({model.rope_low_freq_factor:g}) for rope_scaling = llama3")
    if model.norm_scheme == "sandwich" and model.has_mamba:
        raise CogniError(f"model.norm_scheme = sandwich is for attention layers; model.layer_pattern = "
                         f"{model.layer_pattern!r} has Mamba-2 layers, which use pre")


def apply_family(model: ModelConfig, family: str, where: str = "--set") -> None:
    """model.family = NAME: its preset's options set at once; options set after it override them."""
    if family and family not in FAMILY_PRESETS:
        raise CogniError(f"{where}: model.family = {family!r} is not allowed; choose one of {', '.join(FAMILIES)}")
    for name, value in FAMILY_PRESETS.get(family, {}).items():
        setattr(model, name, value)
    model.family = family


def validate_layer_pattern(model: ModelConfig) -> None:
    """model.layer_pattern: letters A and M only, one per layer; Mamba-2 heads must tile the inner width."""
    pattern = model.layer_pattern
    if not pattern:
        return
    if set(pattern) - {"A", "M"}:
        raise CogniError(f"model.layer_pattern = {pattern!r}: use only the letters A (attention) and M (Mamba-2), "
                         "e.g. MMAMMA")
    if len(pattern) != model.n_layers:
        raise CogniError(f"model.layer_pattern = {pattern!r} has {len(pattern)} letters but model.n_layers = "
                         f"{model.n_layers}; give one letter per layer, or leave it empty for all attention")
    if model.has_mamba and model.mamba_inner % model.mamba_head_dim:
        raise CogniError(f"model.mamba_expand * model.dim = {model.mamba_inner} must be a multiple of "
                         f"model.mamba_head_dim ({model.mamba_head_dim})")


def parse_duration(text: str, where: str = "--max-time") -> float:
    """'90s', '10m', '1h30m', '2.5h' or plain seconds -> seconds."""

    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", cleaned)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != cleaned.replace(" ", ""):
        raise CogniError(f"{where} = {text!r} is not a duration; use e.g. 90s, 10m or 1h30m")
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(number) * scale[unit] for number, unit in parts)
