"""A recipe's report card, OUT/report.md: one section per stage with its time, the two trained runs' own reports
nested under theirs, and the chat eval; OUT/recipe.json (the state file) holds the stages' figures and times."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from cognimamba.evaluation.report import REPORT_FILE, run_report, write_report, write_safely
from cognimamba.evaluation.report_sections import (
    Lines,
    RunRecord,
    chat_eval_lines,
    duration,
    number,
    provenance_section,
    table,
)
from cognimamba.recipes.plan import STAGE_TITLES, STAGES
from cognimamba.recipes.state import STATE_FILE
from cognimamba.runs.layout import is_run_dir
from cognimamba.system.fileio import atomic_write_text
from cognimamba.system.version import VERSION

STAGE_RUNS = {"pretrain": "base", "chat": "chat"}  # the stages that train, and their run dirs in OUT


def is_recipe_dir(path: Path) -> bool:
    return (Path(path) / STATE_FILE).is_file()


def read_stages(out: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The stages done, in order, and each one's figures, from OUT/recipe.json."""
    saved = json.loads((Path(out) / STATE_FILE).read_text(encoding="utf-8"))
    figures = saved.get("figures", {}) if isinstance(saved, dict) else {}
    return list(saved.get("done", [])), {stage: value for stage, value in figures.items() if isinstance(value, dict)}


def stage_result(stage: str, figures: dict[str, Any]) -> str:
    """One cell: what the stage produced."""
    if stage == "tokenizer":
        return f"{number(figures.get('vocab_size'))} tokens"
    if stage == "data":
        return (f"{number(figures.get('pretrain_tokens'))} pretraining tokens, "
                f"{number(figures.get('chat_conversations'))} chat conversations")
    if stage == "pretrain":
        return f"{number(figures.get('steps'))} steps, val {number(figures.get('val_bits_per_byte'))} bits/byte"
    if stage == "chat":
        return f"{number(figures.get('steps'))} steps, chat val loss {number(figures.get('val_loss'))}"
    return str(figures.get("summary", ""))


def stage_seconds(figures: dict[str, Any]) -> float | None:
    """The stage's wall time (recorded since the report card; before, a training stage's training time only)."""
    value = figures.get("wall_seconds", figures.get("seconds"))
    return float(value) if isinstance(value, int | float) else None


def recipe_report(out: Path, sample: bool = True) -> str:
    out = Path(out)
    done, figures = read_stages(out)
    rows = []
    for number_, stage in enumerate(STAGES, start=1):
        state = "" if stage in done else " (not done)"
        rows.append((f"{number_}. {STAGE_TITLES[stage]}{state}", duration(stage_seconds(figures.get(stage, {}))),
                     stage_result(stage, figures.get(stage, {})) if stage in done else ""))
    total = sum(seconds for stage in done if (seconds := stage_seconds(figures.get(stage, {}))) is not None)
    first_run = next((out / name for name in STAGE_RUNS.values() if is_run_dir(out / name)), None)
    lines = [f"# Report card: recipe {out.name}", "",
             f"`{out}`, written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by cognimamba {VERSION}: `cogni recipe chat` "
             "trains a tokenizer, prepares data, pretrains a base model, fine-tunes it to chat and evaluates it.", "",
             *table(("stage", "time", "result"), rows), "", f"Total: {duration(total)}.", "",
             *(provenance_section(RunRecord.read(first_run)) if first_run else [])]
    for number_, stage in enumerate(STAGES, start=1):
        if stage in done:
            lines += stage_section(out, number_, stage, figures.get(stage, {}), sample)
    return "\n".join(lines).rstrip() + "\n"


def stage_section(out: Path, number_: int, stage: str, figures: dict[str, Any], sample: bool) -> Lines:
    title = f"## {number_}. {STAGE_TITLES[stage][:1].upper()}{STAGE_TITLES[stage][1:]} " \
            f"({duration(stage_seconds(figures))})"
    run = out / STAGE_RUNS.get(stage, "")
    if stage in STAGE_RUNS and is_run_dir(run):
        # the sample where it tells most: from the chat model (the base's would be plain text continuation)
        return [title, "", f"Run dir: `{run}`", "", run_report(run, sample=sample and stage == "chat", nested=True)]
    if stage == "eval":
        return [title, "", *chat_eval_lines(figures, "Held-out conversations")[2:]]
    return [title, "", stage_result(stage, figures), ""]


def write_recipe_report(out: Path, sample: bool = True) -> Path:
    """OUT/report.md, and each trained stage's own RUN/report.md beside its run."""
    out = Path(out)
    for name in STAGE_RUNS.values():
        if is_run_dir(out / name):
            write_report(out / name, sample=sample and name == "chat")
    atomic_write_text(out / REPORT_FILE, recipe_report(out, sample=sample))
    return out / REPORT_FILE


def write_recipe_report_safely(out: Path, console: Console) -> Path | None:
    """The report after the recipe: whatever goes wrong is one yellow line, never a failed recipe."""
    return write_safely(lambda: write_recipe_report(out), console)
