"""The run dir contract: what `train` writes and everything else reads.

    RUN/config.json                the resolved Config (+ format version, parameter counts, data dir)
    RUN/tokenizer.json             the tokenizer the model was trained with
    RUN/generation_config.json     sampling defaults for chat
    RUN/model.safetensors          weights of the last checkpoint
    RUN/trainer_state.json         step, tokens, losses of the last checkpoint
    RUN/manifest.json              sizes and hashes of the files above, written last
    RUN/metrics.jsonl              one JSON object per log/eval row
    RUN/checkpoints/step-XXXXXXXX/ resumable checkpoints (model, optimizer.pt, trainer_state, manifest)
    RUN/best/                      a complete loadable run dir for the best val loss

A LoRA run (`cogni train --init-from BASE --lora`) holds an adapter instead of weights, in PEFT's own format,
so `peft.PeftModel.from_pretrained(base_transformer, RUN)` loads it as is:

    RUN/adapter_config.json        peft LoraConfig (r, lora_alpha, target_modules over qkv/proj/gate_up/down;
                                   base_model_name_or_path = the base run's absolute path)
    RUN/adapter_model.safetensors  LoRA A/B matrices under peft's names, e.g.
                                   base_model.model.layers.0.attention.qkv.lora_A.weight
    RUN/config.json                as above (the base's architecture; model.max_seq_len may differ), plus
                                   "lora": {rank, alpha, dropout, targets, base_run, base_weights_sha256}
    RUN/tokenizer.json, generation_config.json, trainer_state.json, manifest.json, metrics.jsonl
    RUN/checkpoints/step-XXXXXXXX/ adapter_model.safetensors instead of model.safetensors
    RUN/best/                      a complete LoRA run dir of the same shape

No model.safetensors: `load_run` loads the base run, checks it is the one the adapter was trained on
(base_weights_sha256 = sha256 of the base's model.safetensors), applies the adapter with peft and merges
it, so chat, test-model and bench see a plain Transformer. `cogni merge BASE RUN --out DIR` writes the
merged model as a plain run dir. The base run is never modified.

Every file is written atomically and each checkpoint directory appears by one rename, so a kill at any
moment leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from cognimamba.config import Config
from cognimamba.errors import CogniError
from cognimamba.faults import kill_point
from cognimamba.fileio import (
    DiskFullError,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    disk_errors,
    fsync_dir,
    read_json,
    safe_child,
    sha256_file,
)
from cognimamba.model import Transformer, num_parameters
from cognimamba.tokenizer import load_tokenizer

RUN_FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
GENERATION = "generation_config.json"
STATE = "trainer_state.json"
MANIFEST = "manifest.json"
OPTIMIZER = "optimizer.pt"
METRICS = "metrics.jsonl"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def weights_file(run: Path) -> str:
    """model.safetensors, or adapter_model.safetensors in a LoRA run dir (one with adapter_config.json)."""
    return ADAPTER_WEIGHTS if (Path(run) / ADAPTER_CONFIG).is_file() else WEIGHTS


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


def write_manifest(directory: Path, names: list[str]) -> None:
    files = {name: {"size": (directory / name).stat().st_size, "sha256": sha256_file(directory / name)}
             for name in names if (directory / name).is_file()}
    atomic_write_json(directory / MANIFEST, {"files": files})


def verify_manifest(directory: Path, check_hashes: bool = True) -> str | None:
    """None when every file in the manifest is intact, else what is wrong."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return "no manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "manifest.json is corrupted"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        return "manifest.json is corrupted"
    for name, entry in manifest.get("files", {}).items():
        try:
            file = safe_child(directory, name)  # a manifest names files in its own dir, nothing else
        except CogniError:
            return f"manifest.json names {name!r}, outside {directory}"
        if not isinstance(entry, dict) or not {"size", "sha256"} <= set(entry):
            return "manifest.json is corrupted"
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != entry["size"]:
            return f"{name} has {file.stat().st_size} bytes, expected {entry['size']}"
        if check_hashes and sha256_file(file) != entry["sha256"]:
            return f"{name} does not match its hash"
    return None


def config_payload(config: Config, model: Transformer, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from cognimamba import __version__

    total, non_embedding = num_parameters(model)
    return {"format_version": RUN_FORMAT_VERSION, "cognimamba_version": __version__, **config.to_dict(),
            "parameters": {"total": total, "non_embedding": non_embedding}, **(extra or {})}


def write_run_files(run: Path, config: Config, model: Transformer, tokenizer: Tokenizer,
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
    return Config.from_dict(sections, str(run / CONFIG)), payload


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CogniError(f"{path}: weights not found")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl") or _looks_like_pickle(path):
        raise CogniError(f"{path}: is a pickle (torch.save) file, not safetensors; pickles are refused because "
                         "loading one can run code. Use a model.safetensors written by cognimamba")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CogniError(f"{path}: truncated or corrupted safetensors file ({error}); "
                         "use the run's best/ or a checkpoint under checkpoints/") from error


def _looks_like_pickle(path: Path) -> bool:
    """torch.save writes a zip ("PK") or a raw pickle (protocol byte 0x80); safetensors starts with a header length."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def load_state_into(model: Transformer, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CogniError(f"{where}: weights do not match config.json ({detail}); the files come from different runs")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CogniError(f"{where}: {name} has shape {tuple(tensor.shape)} but config.json implies "
                             f"{tuple(expected[name].shape)}; the files come from different runs")
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


@dataclass
class LoadedRun:
    """What `cognimamba.load` returns."""

    path: Path
    config: Config
    tokenizer: Tokenizer
    model: Transformer
    info: dict[str, Any]


def recover_best(run: Path) -> None:
    """Finish an interrupted swap of best/ (see save_best)."""
    best, old = run / "best", run / ".best-old"
    if not best.exists() and old.exists():
        os.replace(old, best)


def load_run(path: Path | str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LoadedRun:
    run = Path(path)
    if run.name == "best":
        recover_best(run.parent)  # a kill between save_best's two renames leaves best/ as .best-old
    if not run.is_dir():
        raise CogniError(f"{run}: run dir not found; train one with `cogni train` or `cogni quickstart`")
    recover_best(run)
    if (run / ADAPTER_CONFIG).is_file():
        from cognimamba.train.lora import load_lora_run

        return load_lora_run(run, device, dtype)
    for name in (CONFIG, TOKENIZER, WEIGHTS):
        if not (run / name).is_file():
            raise CogniError(f"{run}: missing {name}; not a complete run dir (try {run}/best)")
    config, payload = read_config(run)
    tokenizer = load_tokenizer(run / TOKENIZER)
    if tokenizer.get_vocab_size() != config.model.vocab_size:
        raise CogniError(f"{run / TOKENIZER}: vocab of {tokenizer.get_vocab_size()} tokens does not match the "
                         f"model's {config.model.vocab_size}; the tokenizer belongs to another run")
    model = Transformer(config.model)
    load_state_into(model, read_weights(run / WEIGHTS), run / WEIGHTS)
    model.to(device=device, dtype=dtype)
    model.eval()
    return LoadedRun(run, config, tokenizer, model, payload)


def save_checkpoint(run: Path, step: int, weights: dict[str, torch.Tensor], optimizer_payload: dict[str, Any],
                    trainer_state: dict[str, Any], keep_last: int, protected: set[str]) -> Path:
    """Write checkpoints/step-N as one directory rename, then publish its weights at the top level."""
    checkpoints = run / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step-{step:08d}"
    staging = checkpoints / f".tmp-step-{step:08d}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        with disk_errors(f"checkpoint {final}"):
            save_weights(staging / weights_file(run), weights)
            kill_point("during-save", step)
            save_optimizer(staging / OPTIMIZER, optimizer_payload)
            atomic_write_json(staging / STATE, trainer_state)
            write_manifest(staging, [weights_file(run), OPTIMIZER, STATE])
            if final.exists():  # only a damaged one: an intact newer checkpoint would have been resumed from
                shutil.rmtree(final)
            os.replace(staging, final)
            fsync_dir(checkpoints)
            publish(run, final, trainer_state)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, DiskFullError):
            good = latest_checkpoint(run)
            raise DiskFullError(f"disk full while writing checkpoint {final}; free some space, then continue "
                                f"with --resume from the last good checkpoint ({good or 'none yet'}), which is "
                                "untouched") from error
        raise
    prune_checkpoints(checkpoints, keep_last, protected | {final.name})
    return final


def publish(run: Path, checkpoint: Path, trainer_state: dict[str, Any]) -> None:
    """Top-level model.safetensors mirrors the newest checkpoint (hard link where possible, else a copy)."""

    weights_name = weights_file(run)

    def link_or_copy(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(checkpoint / weights_name, tmp)
        except OSError:
            shutil.copyfile(checkpoint / weights_name, tmp)

    atomic_write(run / weights_name, link_or_copy)
    atomic_write_json(run / STATE, trainer_state)
    write_manifest(run, [weights_name, STATE, CONFIG, TOKENIZER, GENERATION, ADAPTER_CONFIG])


def prune_checkpoints(checkpoints: Path, keep_last: int, protected: set[str]) -> None:
    steps = sorted(path for path in checkpoints.glob("step-*") if path.is_dir())
    for path in steps[:-keep_last]:
        if path.name not in protected:
            shutil.rmtree(path, ignore_errors=True)
    for stale in checkpoints.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(run: Path) -> Path | None:
    """Newest checkpoint whose manifest checks out; a damaged newer one is skipped."""
    checkpoints = run / "checkpoints"
    if not checkpoints.is_dir():
        return None
    for path in sorted(checkpoints.glob("step-*"), reverse=True):
        if path.is_dir() and verify_manifest(path) is None:
            return path
    return None


def save_best(run: Path, weights: dict[str, torch.Tensor], trainer_state: dict[str, Any]) -> None:
    """Replace best/ with a complete run dir: build aside, then two renames (recover_best finishes a cut one)."""
    staging, best, old = run / ".best-tmp", run / "best", run / ".best-old"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        with disk_errors(f"{best} (the previous best/ is untouched)"):
            extra = [ADAPTER_CONFIG] if weights_file(run) == ADAPTER_WEIGHTS else []
            for name in (CONFIG, TOKENIZER, GENERATION, *extra):
                shutil.copyfile(run / name, staging / name)
            save_weights(staging / weights_file(run), weights)
            atomic_write_json(staging / STATE, trainer_state)
            write_manifest(staging, [weights_file(run), STATE, CONFIG, TOKENIZER, GENERATION, *extra])
            recover_best(run)
            if old.exists():
                shutil.rmtree(old)
            if best.exists():
                os.replace(best, old)
            kill_point("during-best-swap", int(trainer_state.get("step", 0)))
            os.replace(staging, best)
            fsync_dir(run)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def append_metrics(run: Path, row: dict[str, Any]) -> None:
    with disk_errors(str(run / METRICS)), open(run / METRICS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def trim_metrics(run: Path, step: int) -> None:
    """Drop rows after `step` (logged after the checkpoint a run resumes from), and lines cut by a kill."""
    file = Path(run) / METRICS
    if not file.is_file():
        return
    rows = [row for row in read_metrics(run) if isinstance(row, dict) and int(row.get("step", 0)) <= step]
    atomic_write_text(file, "".join(json.dumps(row) + "\n" for row in rows))


def read_metrics(run: Path) -> list[dict[str, Any]]:
    file = Path(run) / METRICS
    if not file.is_file():
        raise CogniError(f"{run}: no metrics.jsonl; train the run first")
    rows = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
    return rows
