"""LoRA adapters through `peft`: wrap our LanguageModel, save in PEFT's own format, load and merge them back.

A LoRA run dir (layout in runs/layout.py) holds only the adapter and points at its base run, so the
base stays untouched and one base can carry many adapters. Loading applies the adapter with peft and
merges it, so inference runs the plain LanguageModel at full speed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cognimamba.config.schema import ModelConfig
from cognimamba.errors import CogniError
from cognimamba.model.build import MODEL_CLASSES
from cognimamba.model.transformer import LanguageModel
from cognimamba.runs.layout import ADAPTER_CONFIG, MANIFEST, WEIGHTS
from cognimamba.runs.tensors import load_state_into, model_state
from cognimamba.system.fileio import atomic_write_text, sha256_file

TARGETS = ("qkv", "proj", "gate_up", "down", "in_proj", "out_proj")
TARGET_GROUPS = {"all": TARGETS, "attention": ("qkv", "proj"), "mlp": ("gate_up", "down"),
                 "mamba": ("in_proj", "out_proj")}
# Settings a fine-tune may change without changing any weight's shape (RoPE is relative, so a longer
# context reuses the same weights).
TUNABLE_MODEL_FIELDS = ("max_seq_len", "dropout")


# peft imports torchao where it is installed (`--weights int8` uses it) for quantized layers a LoRA run never has,
# and torchao's import logs lines about itself that no LoRA user can act on: its prebuilt extensions for other
# Pythons or GPUs, and torch's notice that torchao's Enums need no pytree registration any more.
TORCHAO_IMPORT_NOISE = {
    "torchao": ("Failed to load", "Skipping import of cpp extensions"),
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported by torch.compile",),
}


class _DropMessages(logging.Filter):
    def __init__(self, messages: tuple[str, ...]) -> None:
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(message in record.getMessage() for message in self.messages)


@contextlib.contextmanager
def quiet_torchao_import() -> Iterator[None]:
    """Drop only TORCHAO_IMPORT_NOISE's log lines, only while peft (and through it torchao) is first imported."""
    filters = [(logging.getLogger(name), _DropMessages(messages)) for name, messages in TORCHAO_IMPORT_NOISE.items()]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


def peft_module() -> Any:
    """peft, imported here only: it takes seconds, and only LoRA runs need it."""
    with quiet_torchao_import():
        import peft  # noqa: PLC0415

    return peft


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = TARGETS

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        if self.rank < 1:
            raise CogniError(f"--lora-rank {self.rank} must be at least 1")
        if self.alpha <= 0:
            raise CogniError(f"--lora-alpha {self.alpha} must be positive")
        if not 0 <= self.dropout < 1:
            raise CogniError(f"--lora-dropout {self.dropout} must be in [0, 1)")
        unknown = [target for target in self.targets if target not in TARGETS]
        if unknown or not self.targets:
            raise CogniError(f"--lora-targets: unknown {', '.join(unknown) or '(none)'}; choose from "
                             f"{', '.join(TARGETS)} or all, attention, mlp, mamba")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSettings:
        return cls(int(data["rank"]), float(data["alpha"]), float(data["dropout"]), tuple(data["targets"]))


def parse_targets(text: str) -> tuple[str, ...]:
    """`qkv,down`, or a group: all, attention, mlp."""
    targets: list[str] = []
    for part in text.split(","):
        part = part.strip()
        for target in TARGET_GROUPS.get(part, (part,) if part else ()):
            if target not in targets:
                targets.append(target)
    return tuple(targets)


def lora_config(settings: LoraSettings, targets: tuple[str, ...] | None = None) -> Any:
    return peft_module().LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(targets or settings.targets), bias="none")


def present_targets(model: LanguageModel, targets: tuple[str, ...]) -> tuple[str, ...]:
    """The targets this model has: attention's for attention layers, Mamba-2's in_proj/out_proj for Mamba layers."""
    names = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    present = tuple(target for target in targets if target in names)
    if not present:
        raise CogniError(f"--lora-targets {','.join(targets)}: this model has none of these layers (model."
                         f"layer_pattern = {model.config.layer_pattern!r}); choose from "
                         f"{', '.join(target for target in TARGETS if target in names)}")
    return present


def apply_lora(model: LanguageModel, settings: LoraSettings) -> Any:
    """The model wrapped by peft: base weights frozen, LoRA A/B matrices (B = 0, so no change yet) trainable.

    Targets the model lacks (Mamba-2 projections in an all-attention model, say) are left out, so "all" means
    every projection the model has. The base run's path goes into adapter_config.json when it is written
    (write_adapter_config)."""
    return peft_module().get_peft_model(model, lora_config(settings, present_targets(model, settings.targets)))


def base_transformer(model: torch.nn.Module) -> LanguageModel:
    """Our LanguageModel inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    inner = get_base() if callable(get_base) else model
    assert isinstance(inner, MODEL_CLASSES)
    return inner  # type: ignore[return-value]


def adapter_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """The adapter weights under PEFT's saved names (base_model.model.layers.0.attention.qkv.lora_A.weight)."""
    state = peft_module().get_peft_model_state_dict(peft_model)
    return {name: tensor.detach().contiguous() for name, tensor in state.items()}


def load_adapter_state(peft_model: Any, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = adapter_state(peft_model)
    if set(state) != set(expected):
        raise CogniError(f"{where}: adapter weights do not match the LoRA settings in config.json")
    try:
        peft_module().set_peft_model_state_dict(peft_model, state)
    except RuntimeError as error:
        raise CogniError(f"{where}: adapter weights do not fit the model ({str(error).splitlines()[-1].strip()})") \
            from error


def adapter_config_json(peft_model: Any, base_run: str | None) -> dict[str, Any]:
    """adapter_config.json exactly as `PeftModel.save_pretrained` writes it for a custom model."""
    config = copy.deepcopy(peft_model.peft_config["default"])
    config.base_model_name_or_path = base_run
    config.inference_mode = True
    data = config.to_dict()
    for key, value in data.items():
        if isinstance(value, set):
            data[key] = sorted(value)
    data["auto_mapping"] = {"base_model_class": LanguageModel.__name__, "parent_library": LanguageModel.__module__}
    return dict(sorted(data.items()))


def write_adapter_config(directory: Path, peft_model: Any, base_run: str | None) -> None:

    text = json.dumps(adapter_config_json(peft_model, base_run), indent=2, sort_keys=True)
    atomic_write_text(directory / ADAPTER_CONFIG, text)


def weights_fingerprint(run: Path) -> str:
    """sha256 of a plain run's model.safetensors (from its manifest when that is current, else computed)."""

    weights = run / WEIGHTS
    try:
        entry = json.loads((run / MANIFEST).read_text(encoding="utf-8"))["files"][WEIGHTS]
        if entry["size"] == weights.stat().st_size:
            return str(entry["sha256"])
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return sha256_file(weights)


def lora_run_info(settings: LoraSettings, base_run: Path) -> dict[str, Any]:
    """What config.json records under "lora": the settings and which base, by path and by content."""
    return {**asdict(settings), "targets": list(settings.targets), "base_run": str(Path(base_run).resolve()),
            "base_weights_sha256": weights_fingerprint(Path(base_run))}


def is_lora_run(run: Path) -> bool:

    return (Path(run) / ADAPTER_CONFIG).is_file()


def tuned_model_config(base: ModelConfig, overrides: dict[str, Any], base_run: Path | str) -> ModelConfig:
    """The base's architecture, with only the fields a fine-tune may change taken from `overrides`."""
    config = copy.deepcopy(base)
    for name, value in overrides.items():
        if name == "vocab_size" or getattr(base, name) == value:
            continue
        if name not in TUNABLE_MODEL_FIELDS:
            raise CogniError(f"model.{name}: fine-tuning {base_run} keeps its architecture ({name} = "
                             f"{getattr(base, name)!r}); only {', '.join('model.' + f for f in TUNABLE_MODEL_FIELDS)} "
                             "may change")
        setattr(config, name, value)
    return config


def check_same_architecture(base: ModelConfig, tuned: ModelConfig, where: str) -> None:
    for name, value in asdict(base).items():
        if name not in TUNABLE_MODEL_FIELDS and getattr(tuned, name) != value:
            raise CogniError(f"{where}: the adapter was trained on a different base model (model.{name} = "
                             f"{getattr(tuned, name)!r}, this base has {value!r}); pass the base it was trained on")


def check_base_fingerprint(info: dict[str, Any], base_run: Path, adapter: Path) -> None:
    recorded = info.get("base_weights_sha256")
    if recorded and recorded != weights_fingerprint(base_run):
        raise CogniError(f"{adapter}: this LoRA adapter was trained on a different base model than {base_run} "
                         f"(its weights differ from the recorded base {info.get('base_run', '?')}); "
                         "pass the run it was fine-tuned from")


def merge_adapter(model: LanguageModel, adapter: Path) -> LanguageModel:
    """Apply a PEFT adapter dir to `model` with peft, then fold it into the weights."""
    peft = peft_module()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft_model = peft.PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, KeyError) as error:
        raise CogniError(f"{adapter}: LoRA adapter does not fit this base model "
                         f"({str(error).strip().splitlines()[-1][:200]}); pass the base it was trained on") from error
    missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
    if missing:
        raise CogniError(f"{adapter}: adapter_model.safetensors lacks weights the adapter config names "
                         f"({missing[0][:160]}); the adapter is incomplete")
    merged = peft_model.merge_and_unload()
    assert isinstance(merged, LanguageModel)
    merged.requires_grad_(True)  # peft froze the base; a merged model is a plain model again
    return merged


def merged_from_base(base_model: LanguageModel, base_config: ModelConfig, tuned: ModelConfig, adapter: Path,
                     base_path: Path, info: dict[str, Any]) -> LanguageModel:
    """A fresh LanguageModel with the tuned config, the base's weights and the adapter merged in."""

    check_same_architecture(base_config, tuned, str(adapter))
    check_base_fingerprint(info, base_path, adapter)
    model = LanguageModel(tuned)
    load_state_into(model, model_state(base_model), base_path)
    return merge_adapter(model, adapter)


def lora_base_path(run: Path, payload: dict[str, Any]) -> Path:

    base = (payload.get("lora") or {}).get("base_run")
    if not base:
        try:
            base = json.loads((run / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, json.JSONDecodeError) as error:
            raise CogniError(f"{run / ADAPTER_CONFIG}: unreadable ({error})") from error
    if not base:
        raise CogniError(f"{run}: the LoRA adapter does not say which base run it belongs to; "
                         f"merge it explicitly: cogni merge BASE_RUN {run} --out DIR")
    path = Path(base)
    if not path.is_dir():
        raise CogniError(f"{run}: its base run {path} is gone; if it moved, merge explicitly: "
                         f"cogni merge NEW_BASE_PATH {run} --out DIR")
    return path
