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
    RUN/fixed_point_contexts.safetensors   model.arch = fixed_point only: the contexts phase 2 trains on

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
it, so chat, test-model and bench see a plain LanguageModel. `cogni merge BASE RUN --out DIR` writes the
merged model as a plain run dir. The base run is never modified.

Every file is written atomically and each checkpoint directory appears by one rename, so a kill at any
moment leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cognimamba.errors import CogniError

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
CONTEXT_CACHE = "fixed_point_contexts.safetensors"  # model.arch = fixed_point: phase 2's frozen contexts


def weights_file(run: Path) -> str:
    """model.safetensors, or adapter_model.safetensors in a LoRA run dir (one with adapter_config.json)."""
    return ADAPTER_WEIGHTS if (Path(run) / ADAPTER_CONFIG).is_file() else WEIGHTS


def missing_files(run: Path) -> list[str]:
    """The files a loadable run dir needs that `run` lacks (weights: the adapter's in a LoRA run)."""
    return [name for name in (CONFIG, TOKENIZER, weights_file(run)) if not (run / name).is_file()]


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and not missing_files(path)


@dataclass(frozen=True)
class RunSummary:
    """A run dir found in a folder, as a picker lists it."""

    path: Path
    weights_bytes: int
    profile: str


def find_runs(folder: Path, depth: int = 2) -> list[RunSummary]:
    """The run dirs in `folder` (and its subfolders to `depth`, `best/` included), newest first."""
    found: list[Path] = []
    layer = [Path(folder)]
    for _ in range(depth):
        layer = sorted(child for parent in layer if parent.is_dir() for child in parent.iterdir()
                       if child.is_dir() and not child.name.startswith("."))
        found += [path for path in layer if is_run_dir(path)]
    found.sort(key=lambda path: (path / CONFIG).stat().st_mtime, reverse=True)
    return [RunSummary(path, (path / weights_file(path)).stat().st_size, _profile(path)) for path in found]


def _profile(run: Path) -> str:
    try:
        payload = json.loads((run / CONFIG).read_text())
    except (OSError, ValueError):
        return "?"
    profile = payload.get("profile") if isinstance(payload, dict) else None
    return profile.get("name", "?") if isinstance(profile, dict) else str(profile or "?")


def check_run_path(path: Path) -> Path:
    """A wrong RUN path as one line that says what to do, with plain path checks only (no torch): cheap enough
    to run before anything heavy loads."""
    run = Path(path)
    if run.is_file():
        raise CogniError(f"{run}: is a file, not a run dir; give the folder that holds {CONFIG} and {WEIGHTS}")
    if not run.exists():
        raise CogniError(f"{run}: run dir not found; train one with `cogni train` or `cogni quickstart`")
    missing = missing_files(run)
    if not missing:
        return run
    if is_run_dir(run / "best"):
        raise CogniError(f"{run}: missing {missing[0]}; not a complete run dir (try {run / 'best'})")
    runs = find_runs(run)
    if runs:
        names = ", ".join(str(summary.path) for summary in runs[:5]) + (" …" if len(runs) > 5 else "")
        raise CogniError(f"{run}: a folder of runs, not a run dir; pick one: {names}")
    raise CogniError(f"{run}: missing {missing[0]}; not a run dir (one holds {CONFIG}, {TOKENIZER} and {WEIGHTS}, "
                     "from `cogni train` or `cogni quickstart`)")
