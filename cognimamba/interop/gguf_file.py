"""`cogni export RUN --format gguf`: one GGUF file that llama.cpp and Ollama run, as the run's family's
llama.cpp architecture: "llama" (a run without a family too), "qwen2", "qwen3" or "gemma3".

The tensors are the Hugging Face export's, renamed to GGUF's names, with the changes llama.cpp's own
convert_hf_to_gguf.py makes. Its llama architecture applies RoPE to adjacent pairs (x0, x1), (x2, x3)...
while we (and transformers) rotate the two halves of each head: the rows of q and k are reordered per head so
both compute the same attention (`unpermute_rope_rows` undoes it); qwen2, qwen3 and gemma3 rotate halves as we
do. Gemma's norms scale by (1 + w) in transformers and by w in llama.cpp, so gemma3 norms are stored plus one;
llama.cpp's gemma3 fixes the global layer every sixth, the local RoPE theta at 10k and the attention scale at
head_dim, so a run with other values is refused by name. Llama 3's RoPE scaling goes in as llama.cpp's
`rope_freqs` tensor (each frequency's divisor), linear scaling as metadata.

The tokenizer goes in as a GPT-2-style BPE ("gpt2" model) with the
pre-tokenizer llama.cpp knows by the split our tokenizer.json uses: "smollm" for single digits then GPT-2's
regex (what `cogni prepare` trains), "gpt-2" for GPT-2's alone (older run dirs), so llama.cpp tokenizes as we do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from cognimamba.config.schema import ModelConfig
from cognimamba.errors import CogniError
from cognimamba.interop.chat_template import CHAT_TEMPLATE
from cognimamba.interop.hf_dir import refuse_mamba_layers
from cognimamba.interop.hf_names import check_exportable, export_family, to_hf_state_dict
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, PAD, SPECIAL_TOKENS, special_id
from cognimamba.model.transformer import rope_inverse_frequencies
from cognimamba.runs.loading import load_run
from cognimamba.runs.tensors import model_state
from cognimamba.system.fileio import atomic_write

# --dtype for GGUF: the float types of the HF export, and llama.cpp's block quantizations the gguf package can
# write: q8_0 (blocks of 32 weights, int8 and one f16 scale each: 8.5 bits a weight) and q4_0 (4.5 bits).
QUANTIZED_TYPES = ("q8_0", "q4_0")
GGUF_DTYPES = ("f32", "f16", "bf16", *QUANTIZED_TYPES)

# Hugging Face names -> GGUF names, per layer and global. Llama's post_attention_layernorm is the norm before the
# MLP; Gemma 3's comes after attention, and its pre_feedforward_layernorm is the one before the MLP.
LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
}
SANDWICH_NAMES = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                  "post_feedforward_layernorm": "post_ffw_norm"}
GLOBAL_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
# What llama.cpp's gemma3 does not read from the file but fixes (llama-model.cpp's hparams for LLM_ARCH_GEMMA3).
GEMMA3_FIXED = {"full_attention_every": 6, "rope_theta_local": 10000.0}


def gguf_module() -> Any:
    """The optional `gguf` package (the `export` extra), or a one-line error saying how to get it."""
    try:
        import gguf  # noqa: PLC0415 (optional: cognimamba[export])
    except ImportError as error:
        raise CogniError("GGUF export needs the gguf package: pip install 'cognimamba[export]'") from error
    return gguf


def permute_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's rows from "rotate half" order to llama.cpp's interleaved-pair order."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def unpermute_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `permute_rope_rows`."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def gguf_name(hf_name: str, family: str = "llama") -> str:
    stem, _, kind = hf_name.rpartition(".")  # kind: weight or bias
    if stem in GLOBAL_NAMES:
        return f"{GLOBAL_NAMES[stem]}.{kind}"
    _, _, layer, rest = stem.split(".", 3)  # model.layers.N.<rest>
    names = LAYER_NAMES | SANDWICH_NAMES if family == "gemma3" else LAYER_NAMES
    return f"blk.{layer}.{names[rest]}.{kind}"


def gguf_tensors(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> GGUF-named tensors (float32; for llama q/k rows permuted for its RoPE, for gemma3 norms
    plus one), and llama's `rope_freqs` where Llama 3's RoPE scaling is on."""
    family = export_family(config)
    tensors = {}
    for hf_name, tensor in to_hf_state_dict(state, config).items():
        tensor = tensor.float()
        if family == "llama" and hf_name.endswith("self_attn.q_proj.weight"):
            tensor = permute_rope_rows(tensor, config.n_heads)
        elif family == "llama" and hf_name.endswith("self_attn.k_proj.weight"):
            tensor = permute_rope_rows(tensor, config.n_kv_heads)
        elif family == "gemma3" and hf_name.endswith("norm.weight"):
            tensor = tensor + 1.0
        tensors[gguf_name(hf_name, family)] = tensor.contiguous()
    if config.rope_scaling == "llama3":
        plain = rope_inverse_frequencies(config.attention_head_dim, config.rope_theta)
        scaled = rope_inverse_frequencies(config.attention_head_dim, config.rope_theta, config)
        tensors["rope_freqs.weight"] = (plain / scaled).float()
    return tensors


def check_gguf_exportable(config: ModelConfig) -> None:
    """What the family's llama.cpp architecture fixes or lacks, beyond what transformers' does, by name."""
    check_exportable(config)
    family = export_family(config)
    if config.rope_scaling == "llama3" and family != "llama":
        raise CogniError(f"model.rope_scaling = llama3 cannot be written for llama.cpp's {family}, only for llama")
    if family != "gemma3":
        return
    if not config.sliding_window:
        raise CogniError("model.sliding_window = 0 cannot be exported to GGUF: llama.cpp's gemma3 always has "
                         "sliding-window layers (set a window as long as the context for global attention)")
    for name, fixed in GEMMA3_FIXED.items():
        if getattr(config, name) != fixed:
            raise CogniError(f"model.{name} = {getattr(config, name)} cannot be exported to GGUF: llama.cpp's gemma3 "
                             f"fixes it at {fixed}")
    if config.attention_scale not in (0.0, float(config.attention_head_dim)):
        raise CogniError(f"model.attention_scale = {config.attention_scale:g} cannot be exported to GGUF: llama.cpp's "
                         f"gemma3 scales by head_dim ({config.attention_head_dim})")


def _is_plain_byte_level(pre: dict[str, Any], use_regex: bool) -> bool:
    return pre.get("type") == "ByteLevel" and pre.get("use_regex", True) == use_regex \
        and not pre.get("add_prefix_space")


def gguf_pre_tokenizer(tokenizer: Tokenizer) -> str:
    """llama.cpp's name for our split; refuses tokenizers its BPE would not reproduce."""
    spec = json.loads(tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") or []
    if spec["model"].get("type") == "BPE" and not spec.get("normalizer"):
        if _is_plain_byte_level(pre, use_regex=True):
            return "gpt-2"  # LLAMA_VOCAB_PRE_TYPE_GPT2
        if pre.get("type") == "Sequence" and len(steps) == 2 and steps[0].get("type") == "Digits" \
                and steps[0].get("individual_digits") and _is_plain_byte_level(steps[1], use_regex=True):
            return "smollm"  # LLAMA_VOCAB_PRE_TYPE_SMOLLM: \p{N} alone, then GPT-2's regex
    raise CogniError("tokenizer.json: GGUF export needs a byte-level BPE with GPT-2's split (what "
                     f"`cogni prepare` trains); this one is {spec['model'].get('type')} with pre-tokenizer "
                     f"{pre.get('type')}, which llama.cpp would tokenize differently")


def token_merges(tokenizer: Tokenizer) -> list[str]:
    """BPE merges as "left right" strings."""
    spec = json.loads(tokenizer.to_str())
    # tokenizers writes merges as [left, right] pairs or as "left right" strings, by version
    return [merge if isinstance(merge, str) else " ".join(merge) for merge in spec["model"]["merges"]]


def token_list(tokenizer: Tokenizer) -> tuple[list[str], list[int]]:
    """Every token in id order and its GGUF type: our special tokens are CONTROL, the rest NORMAL."""
    gguf = gguf_module()

    by_id = {token_id: token for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items()}
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if sorted(by_id) != list(range(size)):
        raise CogniError("tokenizer.json: token ids are not contiguous; this tokenizer cannot be written to GGUF")
    special = set(SPECIAL_TOKENS)
    tokens = [by_id[token_id] for token_id in range(size)]
    types = [int(gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL) for token in tokens]
    return tokens, types


def parse_gguf_dtype(name: str) -> str:
    if name not in GGUF_DTYPES:
        raise CogniError(f"--dtype {name!r} is not supported for GGUF; choose one of {', '.join(GGUF_DTYPES)}")
    return name


def add_weight(writer: Any, name: str, tensor: torch.Tensor, dtype: str) -> None:
    """One tensor in `dtype`. Norms stay f32, as llama.cpp's converter keeps them; so does everything with f32.

    A matrix whose rows do not split into whole blocks of 32 cannot be block-quantized; it goes in as f16,
    the fallback llama.cpp's own converter takes.
    """
    gguf = gguf_module()
    if tensor.ndim == 1 or dtype == "f32":
        writer.add_tensor(name, tensor.numpy())
    elif dtype in QUANTIZED_TYPES:
        quant_type = gguf.GGMLQuantizationType.Q8_0 if dtype == "q8_0" else gguf.GGMLQuantizationType.Q4_0
        block_size = gguf.GGML_QUANT_SIZES[quant_type][0]
        if tensor.shape[-1] % block_size:
            writer.add_tensor(name, tensor.to(torch.float16).numpy())
        else:
            writer.add_tensor(name, gguf.quants.quantize(tensor.numpy(), quant_type), raw_dtype=quant_type)
    elif dtype == "f16":
        writer.add_tensor(name, tensor.to(torch.float16).numpy())
    else:  # numpy has no bfloat16: hand over the raw bytes of torch's round-to-nearest-even conversion
        raw = tensor.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
        writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.BF16)


def write_gguf(path: Path, name: str, config: ModelConfig, state: dict[str, torch.Tensor], tokenizer: Tokenizer,
               dtype: str) -> None:
    gguf = gguf_module()

    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                  "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}
    family = export_family(config)
    writer = gguf.GGUFWriter(None, family)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(file_types[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.dim)
    writer.add_block_count(config.n_layers)
    writer.add_feed_forward_length(config.ffn_dim)
    writer.add_head_count(config.n_heads)
    writer.add_head_count_kv(config.n_kv_heads)
    writer.add_key_length(config.attention_head_dim)
    writer.add_value_length(config.attention_head_dim)
    writer.add_rope_dimension_count(config.attention_head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    if config.rope_scaling == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config.rope_scaling_factor)
    if family == "gemma3":
        writer.add_sliding_window(config.sliding_window)

    pre_tokenizer = gguf_pre_tokenizer(tokenizer)
    tokens, types = token_list(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(token_merges(tokenizer))
    writer.add_bos_token_id(special_id(tokenizer, END_OF_TEXT))
    writer.add_eos_token_id(special_id(tokenizer, IM_END))
    writer.add_eot_token_id(special_id(tokenizer, IM_END))
    writer.add_pad_token_id(special_id(tokenizer, PAD))
    writer.add_add_bos_token(False)  # prompts are ChatML text; we never prepend a BOS
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    for tensor_name, tensor in gguf_tensors(state, config).items():
        add_weight(writer, tensor_name, tensor, dtype)

    def write(tmp: Path) -> None:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(path, write)


def export_gguf(run: Path, out: Path, dtype: str = "f32", force: bool = False) -> Path:
    """Write RUN (a LoRA run merged) as one GGUF file."""
    dtype = parse_gguf_dtype(dtype)
    out = Path(out)
    if out.is_dir() or out.suffix.lower() != ".gguf":
        raise CogniError(f"--out {out}: give a file path ending in .gguf for --format gguf")
    if out.exists() and not force:
        raise CogniError(f"--out {out}: file exists; choose a new path or pass --force")
    loaded = load_run(run)
    refuse_mamba_layers(loaded.config.model, Path(run), "gguf")
    check_gguf_exportable(loaded.config.model)
    write_gguf(out, out.stem, loaded.config.model, model_state(loaded.model), loaded.tokenizer, dtype)
    return out
