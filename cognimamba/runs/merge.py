"""`cogni merge`: a LoRA adapter folded into its base, written as a plain run dir."""

from __future__ import annotations

import copy
from pathlib import Path

from cognimamba.errors import CogniError
from cognimamba.runs.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CONFIG, GENERATION, TOKENIZER, WEIGHTS
from cognimamba.runs.loading import load_run, read_config, write_run_files
from cognimamba.runs.lora import is_lora_run, merged_from_base
from cognimamba.runs.manifest import write_manifest
from cognimamba.runs.tensors import model_state, save_weights


def merge_to_run(base_run: Path, adapter: Path, out: Path) -> Path:
    """`cogni merge`: the base with the adapter folded in, written as a plain run dir in `out`."""

    base_run, adapter, out = Path(base_run), Path(adapter), Path(out)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (adapter / name).is_file():
            raise CogniError(f"{adapter}: no {name}; pass a LoRA run dir (cogni train --lora) or a PEFT adapter dir")
    if is_lora_run(base_run):
        raise CogniError(f"{base_run}: is itself a LoRA run; pass the plain run its adapter was trained on")
    if out.resolve() in (base_run.resolve(), adapter.resolve()):
        raise CogniError(f"--out {out}: choose a new directory; the base and the adapter stay untouched")
    if (out / WEIGHTS).exists() or (out / ADAPTER_CONFIG).exists():
        raise CogniError(f"--out {out}: already holds a model; choose another directory")
    base = load_run(base_run)
    if (adapter / CONFIG).is_file():
        config, payload = read_config(adapter)
        info = payload.get("lora") or {}
    else:  # a plain PEFT adapter from elsewhere: only the shapes can be checked
        config, info = copy.deepcopy(base.config), {}
    merged = merged_from_base(base.model, base.config.model, config.model, adapter, base_run, info)
    write_run_files(out, config, merged, base.tokenizer,
                    {"merged_from": {"base_run": str(base_run.resolve()), "adapter": str(adapter.resolve()),
                                     "lora": info}})
    save_weights(out / WEIGHTS, model_state(merged))
    write_manifest(out, [WEIGHTS, CONFIG, TOKENIZER, GENERATION])
    return out
