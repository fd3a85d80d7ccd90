"""Where a run's weights start: fresh, another run's (--init-from, LoRA optional), or its own checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cognimamba.config.schema import Config, validate
from cognimamba.data.data_dir import DataDir
from cognimamba.errors import CogniError
from cognimamba.model.build import build_model
from cognimamba.model.tokenizer import tokenizer_hash
from cognimamba.runs.checkpoints import latest_checkpoint, recover_best
from cognimamba.runs.layout import ADAPTER_WEIGHTS, OPTIMIZER, STATE, WEIGHTS
from cognimamba.runs.loading import load_run, read_config
from cognimamba.runs.lora import (
    LoraSettings,
    apply_lora,
    check_base_fingerprint,
    is_lora_run,
    load_adapter_state,
    lora_run_info,
    tuned_model_config,
)
from cognimamba.runs.metrics import trim_metrics
from cognimamba.runs.tensors import load_optimizer, load_state_into, model_state, read_weights
from cognimamba.system.fileio import read_json
from cognimamba.train.finetune_defaults import apply_finetune_defaults, choose_finetune_defaults
from cognimamba.train.options import TrainOptions
from cognimamba.train.state import Counters


@dataclass
class StartingPoint:
    model: torch.nn.Module  # on the CPU; LoRA-wrapped when training adapters
    lora: LoraSettings | None
    run_info: dict[str, Any] = field(default_factory=dict)  # init_from / lora, for config.json
    counters: Counters = field(default_factory=Counters)
    resume_payload: dict[str, Any] | None = None  # optimizer, scaler and random state of the checkpoint
    note: str = ""  # what the fine-tuning defaults chose, for the training header


def starting_point(options: TrainOptions, config: Config, data: DataDir, is_main: bool) -> StartingPoint:
    """The model to train and, when resuming, the checkpoint's counters and optimizer payload."""
    run = Path(options.out)
    if options.resume:
        return _resumed(run, config, options.lora, is_main)
    if options.lora is not None and options.init_from is None:
        raise CogniError("--lora trains adapters on a trained model: add --init-from RUN")
    if options.init_from is None:
        start = StartingPoint(build_model(config.model), None)
    else:
        model, run_info, note = _init_from(options, config, data)
        start = StartingPoint(model, options.lora, run_info, note=note)
    if is_main:
        trim_metrics(run, 0)  # rows of an earlier attempt that died before its first checkpoint
    return start


def _resumed(run: Path, config: Config, lora: LoraSettings | None, is_main: bool) -> StartingPoint:
    config.model, lora, run_info = _fine_tune_of(run, config, lora)
    model = build_model(config.model)  # built before loading, so the random stream matches a fresh start
    recover_best(run)
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise CogniError(f"{run}: no intact checkpoint to resume from; start without --resume")
    saved_config, _ = read_config(run)
    if saved_config.model != config.model:
        raise CogniError(f"{run}: the model settings differ from the checkpoint's; resume with the same "
                         "--profile/--config, or start a new --out")
    counters = Counters.from_dict(read_json(checkpoint / STATE, "trainer state"))
    if is_main:
        trim_metrics(run, counters.step)  # rows logged after the checkpoint are logged again, identically
    model = _resume_weights(model, checkpoint, lora, run_info)
    return StartingPoint(model, lora, run_info, counters, load_optimizer(checkpoint / OPTIMIZER))


def _init_from(options: TrainOptions, config: Config, data: DataDir) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """The base run's weights (its architecture; a longer context allowed), LoRA-wrapped when asked; on chat
    data, with the fine-tuning defaults for what the user left unset."""
    base_path, lora = Path(options.init_from or ""), options.lora
    base = load_run(base_path)
    if base.config.model.vocab_size != config.model.vocab_size or (
            data.meta.get("tokenizer_hash") not in (None, tokenizer_hash(base.tokenizer))):
        raise CogniError(f"{data.path}: tokenized with a different tokenizer than {base_path} (vocab "
                         f"{config.model.vocab_size} vs {base.config.model.vocab_size}); prepare the data with "
                         f"--tokenizer {base_path}/tokenizer.json")
    config.model = tuned_model_config(base.config.model, options.model_overrides, base_path)
    run_info: dict[str, Any] = {"init_from": str(Path(base_path).resolve())}
    note = ""
    if options.user_set is not None:
        choice = choose_finetune_defaults(config, data, options.user_set, lora is not None)
        apply_finetune_defaults(config, choice)
        validate(config)
        if choice.values:
            run_info["finetune_defaults"], note = choice.values, choice.describe()
    model = build_model(config.model)
    load_state_into(model, model_state(base.model), Path(base_path))
    if lora is None:
        return model, run_info, note
    if is_lora_run(Path(base_path)):
        raise CogniError(f"{base_path}: is a LoRA run; merge it first (cogni merge BASE {base_path} --out DIR), "
                         "then train adapters on the merged run")
    run_info["lora"] = lora_run_info(lora, Path(base_path))
    return apply_lora(model, lora), run_info, note


def _fine_tune_of(run: Path, config: Config, lora: LoraSettings | None) -> tuple[Any, LoraSettings | None, dict]:
    """A fine-tuned run resumes with its own model settings and, for LoRA, its adapter settings."""
    if not (run / "config.json").is_file():
        return config.model, lora, {}
    saved_config, payload = read_config(run)
    saved_lora = LoraSettings.from_dict(payload["lora"]) if "lora" in payload else None
    if lora is not None and saved_lora is None:
        raise CogniError(f"--lora: {run} was not trained with LoRA; resume it without --lora")
    run_info = {key: payload[key] for key in ("init_from", "lora") if key in payload}
    if not run_info:
        return config.model, lora, {}
    return saved_config.model, saved_lora, run_info


def _resume_weights(model: torch.nn.Module, checkpoint: Path, lora: LoraSettings | None,
                    run_info: dict[str, Any]) -> torch.nn.Module:
    if lora is None:
        load_state_into(model, read_weights(checkpoint / WEIGHTS), checkpoint / WEIGHTS)  # type: ignore[arg-type]
        return model
    base_path = Path(run_info["lora"]["base_run"])
    check_base_fingerprint(run_info["lora"], base_path, checkpoint)
    load_state_into(model, model_state(load_run(base_path).model), base_path)  # type: ignore[arg-type]
    wrapped = apply_lora(model, lora)  # type: ignore[arg-type]
    load_adapter_state(wrapped, read_weights(checkpoint / ADAPTER_WEIGHTS), checkpoint / ADAPTER_WEIGHTS)
    return wrapped
