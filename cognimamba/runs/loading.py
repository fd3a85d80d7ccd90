"""Reading a run dir back: its config, tokenizer and weights as one LoadedRun (LoRA runs merged)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer

from cognimamba.config.schema import Config
from cognimamba.errors import CogniError
from cognimamba.model.build import build_model
from cognimamba.model.tokenizer import load_tokenizer
from cognimamba.model.transformer import LanguageModel, num_parameters
from cognimamba.runs.checkpoints import recover_best
from cognimamba.runs.layout import (
    ADAPTER_CONFIG,
    CONFIG,
    GENERATION,
    RUN_FORMAT_VERSION,
    TOKENIZER,
    WEIGHTS,
    check_run_path,
    weights_file,
)
from cognimamba.runs.lora import is_lora_run, lora_base_path, merged_from_base
from cognimamba.runs.tensors import check_shapes, config_shapes, load_state_into, read_weights, weight_shapes
from cognimamba.system.fileio import (
    atomic_write,
    atomic_write_json,
    read_json,
)
from cognimamba.system.version import VERSION


def config_payload(config: Config, model: LanguageModel, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    total, non_embedding = num_parameters(model)
    return {"format_version": RUN_FORMAT_VERSION, "cognimamba_version": VERSION, **config.to_dict(),
            "parameters": {"total": total, "non_embedding": non_embedding}, **(extra or {})}


def write_run_files(run: Path, config: Config, model: LanguageModel, tokenizer: Tokenizer,
                    extra: dict[str, Any] | None = None) -> None:
    """config.json, tokenizer.json and generation_config.json: the parts that do not change while training."""
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / CONFIG, config_payload(config, model, extra))
    atomic_write(run / TOKENIZER, lambda tmp: tokenizer.save(str(tmp)))
    atomic_write_json(run / GENERATION, config.to_dict()["generation"])


def read_config(run: Path) -> tuple[Config, dict[str, Any]]:
    payload = read_json(run / CONFIG, "run config")
    if not isinstance(payload, dict) or "model" not in payload:
        raise CogniError(f"{run / CONFIG}: not a cognimamba run config")
    version = payload.get("format_version")
    if version != RUN_FORMAT_VERSION:
        raise CogniError(f"{run / CONFIG}: run format version {version} is not supported by this cognimamba "
                         f"(expected {RUN_FORMAT_VERSION}); re-train or convert the run")
    sections = {key: payload[key] for key in ("profile", "model", "data", "train", "generation") if key in payload}
    try:
        return Config.from_dict(sections, str(run / CONFIG)), payload
    except CogniError as error:
        if str(error).startswith(str(run / CONFIG)):
            raise
        raise CogniError(f"{run / CONFIG}: {error}") from error


@dataclass
class LoadedRun:
    """What `cognimamba.load` returns."""

    path: Path
    config: Config
    tokenizer: Tokenizer
    model: LanguageModel
    info: dict[str, Any]


def load_run(path: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LoadedRun:
    run = Path(path)
    if run.name == "best":
        recover_best(run.parent)  # a kill between save_best's two renames leaves best/ as .best-old
    recover_best(run)
    check_run_path(run)  # the same one-line answers as `cogni chat` gives before it loads anything
    if (run / ADAPTER_CONFIG).is_file():
        return load_lora_run(run, device, dtype)
    config, payload = read_config(run)
    tokenizer = load_tokenizer(run / TOKENIZER)
    if tokenizer.get_vocab_size() != config.model.vocab_size:
        raise CogniError(f"{run / TOKENIZER}: vocab of {tokenizer.get_vocab_size()} tokens does not match the "
                         f"model's {config.model.vocab_size}; the tokenizer belongs to another run")
    # Checked from the header first: a config.json that does not describe these weights (a copied one, say)
    # must not get to allocate a model of its own size.
    check_shapes(weight_shapes(run / WEIGHTS), config_shapes(config.model), run / WEIGHTS)
    model = build_model(config.model)
    load_state_into(model, read_weights(run / WEIGHTS), run / WEIGHTS)
    model.to(device=device, dtype=dtype)
    model.eval()
    return LoadedRun(run, config, tokenizer, model, payload)


def load_lora_run(run: Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Any:
    """A LoRA run dir as a LoadedRun: its base loaded, the adapter applied with peft and merged.

    Called by load_run once check_run_path has seen its files (the adapter's weights among them)."""
    config, payload = read_config(run)
    base_path = lora_base_path(run, payload)
    if is_lora_run(base_path):
        raise CogniError(f"{run}: its base {base_path} is itself a LoRA run; merge that first with cogni merge")
    base = load_run(base_path)
    tokenizer = load_tokenizer(run / TOKENIZER)
    if tokenizer.get_vocab_size() != base.config.model.vocab_size:
        raise CogniError(f"{run / TOKENIZER}: vocab differs from its base {base_path}; "
                         "the files come from different runs")
    model = merged_from_base(base.model, base.config.model, config.model, run, base_path, payload.get("lora") or {})
    model.to(device=device, dtype=dtype)
    model.eval()
    return LoadedRun(run, config, tokenizer, model, payload)


def check_run(path: Path | str) -> Path:
    """The cheap part of loading, without building the model: the run's files are there and read.

    For front ends that must refuse a wrong RUN in one line before a slow load (`cogni chat`, before its app
    takes the screen); the weights are opened only far enough to read their header.
    """
    run = check_run_path(Path(path))  # the files are there (plain path checks, no torch)
    weights = run / weights_file(run)  # model.safetensors, or the adapter of a LoRA run
    read_config(run)
    load_tokenizer(run / TOKENIZER)
    try:
        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as error:
        raise CogniError(f"{weights}: truncated or corrupted safetensors file ({error}); use the run's best/ "
                         "or a checkpoint under checkpoints/") from error
    return run
