"""Weights and optimizer state on disk: safetensors only for weights, tensor-only pickles for optimizers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cognimamba.config.schema import ModelConfig
from cognimamba.errors import CogniError
from cognimamba.model.build import build_model
from cognimamba.model.transformer import LanguageModel
from cognimamba.system.fileio import (
    atomic_write,
)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights to save: tied output weights are stored once, as the embedding."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    config = getattr(model, "config", None)
    if config is not None and config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    cpu_state = {name: tensor.cpu() for name, tensor in state.items()}
    atomic_write(path, lambda tmp: save_file(cpu_state, str(tmp), metadata=metadata or {"format": "pt"}))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    _refuse_missing_or_pickle(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise _corrupted(path, error) from error


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from the safetensors header alone: nothing is loaded."""
    _refuse_missing_or_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise _corrupted(path, error) from error


def _refuse_missing_or_pickle(path: Path) -> None:
    if not path.is_file():
        raise CogniError(f"{path}: weights not found")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl") or _looks_like_pickle(path):
        raise CogniError(f"{path}: is a pickle (torch.save) file, not safetensors; pickles are refused because "
                         "loading one can run code. Use a model.safetensors written by cognimamba")


def _corrupted(path: Path, error: Exception) -> CogniError:
    return CogniError(f"{path}: truncated or corrupted safetensors file ({error}); "
                      "use the run's best/ or a checkpoint under checkpoints/")


def _looks_like_pickle(path: Path) -> bool:
    """torch.save writes a zip ("PK") or a raw pickle (protocol byte 0x80). Safetensors starts with its JSON header's
    length (8 bytes, little-endian) and then "{"; a length such as 640 also begins 0x80 0x02, so that is checked."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return False
    return head[:2] == b"PK" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def config_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The weights a model of `config` saves, and their shapes, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = build_model(config)
    return {name: tuple(tensor.shape) for name, tensor in model_state(model).items()}


def check_shapes(shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], where: Path) -> None:
    """The same tensor names and shapes as config.json implies, or one line naming the first difference."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CogniError(f"{where}: weights do not match config.json ({detail}); the files come from different runs")
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise CogniError(f"{where}: {name} has shape {shapes[name]} but config.json implies "
                             f"{shape}; the files come from different runs")


def load_state_into(model: LanguageModel, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = {name: tuple(tensor.shape) for name, tensor in model_state(model).items()}
    check_shapes({name: tuple(tensor.shape) for name, tensor in state.items()}, expected, where)
    model.load_state_dict(state, strict=False)


def save_optimizer(path: Path, payload: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        # Through a Python file, so a full disk surfaces as the OSError (torch's own writer only says "unexpected pos").
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)

    atomic_write(path, write)


def load_optimizer(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError for anything but plain tensors and containers
        raise CogniError(f"{path}: refused or unreadable optimizer state ({type(error).__name__}); "
                         "only tensor state is loaded, never arbitrary pickles") from error
