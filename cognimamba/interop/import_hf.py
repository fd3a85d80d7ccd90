"""`cogni import-hf DIR --out RUN`: a Llama, Qwen 2, Qwen 3 or Gemma 3 checkpoint on disk -> a cognimamba run dir.

The run then works with chat, bench, test-model and `cogni train --init-from RUN` like one trained here.
Only what our LanguageModel computes exactly is accepted (interop/hf_config.py reads the config and refuses the
rest by name); a Gemma 3 vision-language checkpoint imports its text tower. Weights are read from safetensors
only (pickled `.bin` files can run code). The checkpoint's own chat template, where it has one, is kept in the
run's config.json (`hf_chat_template`, with the `hf_special_tokens` it reads by name), and chat and serve render
prompts with it (chat/templates.py: `inference.chat_template`).

Special tokens: cognimamba's chat and tool format needs `<|im_start|>`, `<|im_end|>`, `<tool_call>` and the
rest. A checkpoint exported by cognimamba already has them and imports bit for bit. A tokenizer that lacks
some gets them appended as new special tokens, with embedding rows set to the mean of the existing ones (the
usual start for new tokens: the model's other outputs do not change); such a model must be fine-tuned on
chat data before it can use them. Embedding rows past the tokenizer's size (vocabulary padding) are dropped,
since no text can produce those ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer

from cognimamba.config.schema import MAX_CONTEXT_LENGTH, Config, GenerationConfig, validate
from cognimamba.errors import CogniError
from cognimamba.interop.hf_config import model_config_from_hf
from cognimamba.interop.hf_names import from_hf_state_dict, text_tower
from cognimamba.model.tokenizer import SPECIAL_TOKENS
from cognimamba.model.transformer import LanguageModel
from cognimamba.runs.layout import CONFIG, GENERATION, TOKENIZER, WEIGHTS
from cognimamba.runs.loading import write_run_files
from cognimamba.runs.manifest import write_manifest
from cognimamba.runs.tensors import load_state_into, model_state, read_weights, save_weights
from cognimamba.system.fileio import read_json, safe_child


def read_hf_weights(source: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, or every shard named by model.safetensors.index.json."""
    index = source / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, "safetensors index").get("weight_map", {})
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(read_weights(safe_child(source, str(shard))))  # index names come from a stranger's file
        return state
    if (source / "model.safetensors").is_file():
        return read_weights(source / "model.safetensors")
    if any(source.glob("*.bin")) or any(source.glob("*.pt")):
        raise CogniError(f"{source}: only pickle-based weights (.bin/.pt) found; they are refused because loading "
                         "them can run code. Re-save with `model.save_pretrained(DIR, safe_serialization=True)`")
    raise CogniError(f"{source}: no model.safetensors (or sharded index) found")


def read_hf_tokenizer(source: Path) -> Tokenizer:
    path = source / "tokenizer.json"
    if not path.is_file():
        raise CogniError(f"{source}: no tokenizer.json (a fast tokenizer file); create it with "
                         "`AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)` and import again")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises plain Exception subclasses
        raise CogniError(f"{path}: not a valid tokenizers JSON file ({str(error).splitlines()[0]})") from error


def add_chat_tokens(tokenizer: Tokenizer) -> list[str]:
    """Append the special tokens the chat format needs and the tokenizer lacks; returns those added."""
    missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in missing])
    return missing


def fit_vocab_rows(weight: torch.Tensor, old_size: int, new_size: int) -> torch.Tensor:
    """Keep the rows of the tokenizer's `old_size` tokens; new tokens' rows start at their mean."""
    kept = weight[:old_size]
    if new_size == old_size:
        return kept.contiguous()
    mean = kept.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([kept, mean.expand(new_size - old_size, -1)]).contiguous()


def read_chat_template(source: Path) -> str | None:
    """The checkpoint's Jinja chat template: chat_template.jinja (transformers 5) or tokenizer_config.json's."""
    if (source / "chat_template.jinja").is_file():
        return (source / "chat_template.jinja").read_text(encoding="utf-8")
    path = source / "tokenizer_config.json"
    template = read_json(path, "tokenizer config").get("chat_template") if path.is_file() else None
    return template if isinstance(template, str) else None


def read_template_tokens(source: Path) -> dict[str, str]:
    """bos_token, eos_token, ... from tokenizer_config.json: the chat template writes them by name."""
    path = source / "tokenizer_config.json"
    tokenizer_config = read_json(path, "tokenizer config") if path.is_file() else {}
    tokens = {}
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = tokenizer_config.get(name) if isinstance(tokenizer_config, dict) else None
        value = value.get("content") if isinstance(value, dict) else value  # older files: {"content": ...}
        if isinstance(value, str):
            tokens[name] = value
    return tokens


def generation_defaults(source: Path) -> GenerationConfig:
    """The checkpoint's sampling settings where it has them, else ours."""
    settings = GenerationConfig()
    path = source / "generation_config.json"
    hf: dict[str, Any] = read_json(path, "generation config") if path.is_file() else {}
    for name in ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens"):
        value = hf.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            setattr(settings, name, type(getattr(settings, name))(value))
    if hf.get("do_sample") is False:
        settings.temperature = 0.0  # greedy
    return settings


def run_context(declared: int, max_seq_len: int | None, where: Path) -> int:
    """The run's context: --max-seq-len, else the checkpoint's max_position_embeddings, which recent checkpoints
    set beyond what cognimamba runs (MAX_CONTEXT_LENGTH); those import with a --max-seq-len that caps it."""
    if max_seq_len is not None:
        if max_seq_len > MAX_CONTEXT_LENGTH:
            raise CogniError(f"--max-seq-len {max_seq_len}: at most {MAX_CONTEXT_LENGTH}")
        return max_seq_len
    if declared > MAX_CONTEXT_LENGTH:
        raise CogniError(f"{where}: max_position_embeddings = {declared} is longer than the {MAX_CONTEXT_LENGTH} "
                         f"tokens cognimamba runs; pass --max-seq-len N (at most {MAX_CONTEXT_LENGTH}) to import "
                         "it with a shorter context")
    return declared


def import_hf(source: Path, out: Path, max_seq_len: int | None = None, force: bool = False) -> tuple[Path, list[str]]:
    """Convert the checkpoint in `source` into the run dir `out`; returns it and the special tokens added."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise CogniError(f"{source}: not a directory; give a Hugging Face checkpoint directory on disk")
    if out.resolve() == source.resolve():
        raise CogniError(f"--out {out}: is the checkpoint itself; choose a new directory for the run")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise CogniError(f"--out {out}: exists and is not empty; choose a new path or pass --force")
    hf_config = read_json(source / "config.json", "Hugging Face config")
    if not isinstance(hf_config, dict):
        raise CogniError(f"{source / 'config.json'}: not a model config")
    try:
        model_config = model_config_from_hf(hf_config)
    except (KeyError, TypeError, ValueError) as error:
        raise CogniError(f"{source / 'config.json'}: missing or malformed field {error}") from error
    model_config.max_seq_len = run_context(model_config.max_seq_len, max_seq_len, source / "config.json")

    tokenizer = read_hf_tokenizer(source)
    old_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if max(tokenizer.get_vocab(with_added_tokens=True).values()) != old_size - 1:
        raise CogniError(f"{source / 'tokenizer.json'}: token ids have gaps; only tokenizers with ids 0..N-1 import")
    if old_size > model_config.vocab_size:
        raise CogniError(f"{source}: tokenizer has {old_size} tokens but the model only {model_config.vocab_size} "
                         "embedding rows; the tokenizer belongs to another model")
    added = add_chat_tokens(tokenizer)
    state = from_hf_state_dict(text_tower(read_hf_weights(source)), model_config)
    new_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if new_size != model_config.vocab_size:
        for name in ("tok_embeddings.weight", "lm_head.weight"):
            if name in state:
                state[name] = fit_vocab_rows(state[name], old_size, new_size)
        model_config.vocab_size = new_size

    config = Config(profile="imported", model=model_config, generation=generation_defaults(source))
    validate(config)
    model = LanguageModel(config.model)
    load_state_into(model, {name: tensor.float() for name, tensor in state.items()}, source)
    if out.exists() and force:
        for name in (WEIGHTS, CONFIG, TOKENIZER, GENERATION, "manifest.json"):
            (out / name).unlink(missing_ok=True)
    write_run_files(out, config, model, tokenizer, {
        "imported_from": str(source.resolve()), "hf_architectures": hf_config.get("architectures"),
        "added_special_tokens": added, "hf_chat_template": read_chat_template(source),
        "hf_special_tokens": read_template_tokens(source)})
    save_weights(out / WEIGHTS, model_state(model))
    write_manifest(out, [WEIGHTS, CONFIG, TOKENIZER, GENERATION])
    return out, added

