"""`cogni export RUN --format hf`: a directory transformers loads with no custom code.

    DIR/config.json               the run's family's config: Llama, Qwen 2, Qwen 3 or Gemma 3 (hf_names.hf_model_config)
    DIR/model.safetensors         weights under that family's names, q/k/v and gate/up split apart
    DIR/tokenizer.json            our BPE, unchanged (same ids, same special tokens)
    DIR/tokenizer_config.json     special tokens and the ChatML + tools chat template
    DIR/generation_config.json    the run's sampling defaults and both stop tokens
    DIR/README.md                 the model card

A LoRA run exports merged (one model dir), or as DIR/base (the base model, as above) plus DIR/adapter
(a PEFT adapter under Llama module names). The directory is built aside and renamed into place, so an
interrupted export never leaves a half-written model where a loader would find it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from cognimamba.config.schema import Config, ModelConfig
from cognimamba.errors import CogniError
from cognimamba.interop.chat_template import CHAT_TEMPLATE
from cognimamba.interop.hf_names import check_exportable, hf_model_config, to_hf_state_dict
from cognimamba.interop.model_card import model_card, read_training_record
from cognimamba.interop.peft_adapter import find_lora, write_hf_adapter
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, PAD, SPECIAL_TOKENS, special_id
from cognimamba.runs.loading import LoadedRun, load_run
from cognimamba.runs.tensors import model_state, save_weights
from cognimamba.system.fileio import atomic_write, atomic_write_json, atomic_write_text, disk_errors, fsync_dir

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
HF_DTYPE_NAMES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def refuse_mamba_layers(model: ModelConfig, run: Path, format_name: str) -> None:
    """The families transformers and GGUF know have no Mamba-2 layers and no fixed-point context: such runs are
    refused by name."""
    if model.is_fixed_point:
        raise CogniError(f"{run}: model.arch = fixed_point (the fixed-point context model), which --format "
                         f"{format_name} cannot express (it writes attention-only families); chat, bench and "
                         "test-model use the run as it is")
    if model.has_mamba:
        raise CogniError(f"{run}: model.layer_pattern = {model.layer_pattern!r} has Mamba-2 layers, which --format "
                         f"{format_name} cannot express (it writes attention-only families); chat, bench and "
                         "test-model use the run as it is")


def parse_dtype(name: str) -> str:
    if name not in DTYPES:
        raise CogniError(f"--dtype {name!r} is not supported; choose one of {', '.join(DTYPES)}")
    return name


def tokenizer_config(max_seq_len: int) -> dict[str, Any]:
    """tokenizer_config.json for the generic fast tokenizer: tokenizer.json already holds the whole BPE."""
    named = {END_OF_TEXT, IM_END, PAD}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": END_OF_TEXT,
        "eos_token": IM_END,
        "pad_token": PAD,
        "unk_token": None,
        "additional_special_tokens": [token for token in SPECIAL_TOKENS if token not in named],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_seq_len,
        "chat_template": CHAT_TEMPLATE,
    }


def generation_config(config: Config, tokenizer: Tokenizer) -> dict[str, Any]:
    """The run's sampling defaults; generation stops at <|im_end|> or <|endoftext|>, as in `cogni chat`."""
    settings = config.generation
    sampling: dict[str, Any] = {"do_sample": settings.temperature > 0}
    if settings.temperature > 0:
        sampling.update(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    return {
        "bos_token_id": special_id(tokenizer, END_OF_TEXT),
        "eos_token_id": [special_id(tokenizer, IM_END), special_id(tokenizer, END_OF_TEXT)],
        "pad_token_id": special_id(tokenizer, PAD),
        **sampling,
        "repetition_penalty": settings.repetition_penalty,
        "max_new_tokens": settings.max_new_tokens,
    }


def write_hf_model(out: Path, config: Config, state: dict[str, torch.Tensor], tokenizer: Tokenizer,
                   dtype: str, card: str) -> None:
    """Write one transformers model dir from our state dict (tied lm_head omitted, as saved)."""
    hf_config = hf_model_config(config.model, tokenizer)
    hf_config["torch_dtype"] = HF_DTYPE_NAMES[dtype]  # transformers 4.x
    hf_config["dtype"] = HF_DTYPE_NAMES[dtype]  # transformers 5.x
    weights = {name: tensor.to(DTYPES[dtype]) for name, tensor in to_hf_state_dict(state, config.model).items()}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", hf_config)
    save_weights(out / "model.safetensors", weights, metadata={"format": "pt"})
    atomic_write(out / "tokenizer.json", lambda tmp: tokenizer.save(str(tmp)))
    atomic_write_json(out / "tokenizer_config.json", tokenizer_config(config.model.max_seq_len))
    atomic_write_json(out / "generation_config.json", generation_config(config, tokenizer))
    atomic_write_text(out / "README.md", card)


def build_directory(out: Path, force: bool, build: Callable[[Path], None]) -> None:
    """Run `build(staging)` on a sibling directory, then rename it to `out` (replacing it with --force)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CogniError(f"--out {out}: is a file; give a directory path for --format hf")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CogniError(f"--out {out}: directory exists and is not empty; choose a new path or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.export-tmp"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        with disk_errors(str(out)):
            build(staging)
            if out.exists():
                shutil.rmtree(out)
            os.replace(staging, out)
            fsync_dir(out.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _card(name: str, loaded: LoadedRun, dtype: str, adapter_note: str | None = None) -> str:
    state, metrics = read_training_record(loaded.path)
    return model_card(name, loaded.config, loaded.info, state, metrics, HF_DTYPE_NAMES[dtype], adapter_note)


def export_hf(run: Path, out: Path, dtype: str = "f32", adapter: bool = False, force: bool = False) -> Path:
    """Export a run dir for transformers; a LoRA run merged, or with `adapter` as base + PEFT adapter."""
    dtype = parse_dtype(dtype)
    out = Path(out)
    if out.resolve() == Path(run).resolve() or out.resolve() in Path(run).resolve().parents:
        raise CogniError(f"--out {out}: would replace the run being exported; choose a directory outside it")
    lora = find_lora(Path(run))
    if adapter and lora is None:
        raise CogniError(f"--adapter: {run} is not a LoRA run (no adapter_config.json); export it without --adapter")
    if adapter and lora is not None:
        base = load_run(lora.base_run)
        refuse_mamba_layers(base.config.model, Path(run), "hf")
        check_exportable(base.config.model)

        def build_split(staging: Path) -> None:
            note = (f"This directory holds the base model; the LoRA fine-tune `{Path(run).name}` is a PEFT "
                    "adapter in `../adapter`.")
            write_hf_model(staging / "base", base.config, model_state(base.model), base.tokenizer, dtype,
                           _card(f"{out.name}-base", base, dtype, note))
            write_hf_adapter(staging / "adapter", lora, base.config.model, (out / "base").resolve())

        build_directory(out, force, build_split)
        return out
    loaded = load_run(run)  # a LoRA run loads merged
    refuse_mamba_layers(loaded.config.model, Path(run), "hf")
    check_exportable(loaded.config.model)
    note = f"LoRA fine-tune of `{lora.base_run}`, merged into the weights." if lora is not None else None
    build_directory(out, force, lambda staging: write_hf_model(
        staging, loaded.config, model_state(loaded.model), loaded.tokenizer, dtype,
        _card(out.name, loaded, dtype, note)))
    return out
