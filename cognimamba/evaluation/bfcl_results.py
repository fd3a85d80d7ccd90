"""BFCL scores kept beside a run: written by `cogni eval --bfcl`, read back by `cogni test-model` and the report card.

`RUN/eval/bfcl-YYYYMMDD-HHMMSS.json` holds the summary; BFCL's own files (its per-case results and score files)
sit in the folder of the same name beside it. Summarizing reads those files, not bfcl-eval, so showing scores
needs no bfcl-eval installed.

A case the server refused because its prompt does not fit the model's context (a 400 with the code
`context_length_exceeded`) reaches BFCL as an error text, and BFCL's irrelevance checker scores any reply
without a call as correct, refusals included. So each category also counts its refused cases, how many of
them BFCL scored correct, and the accuracy with every refused case counted wrong.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from cognimamba.evaluation.harness_results import EVAL_DIR
from cognimamba.system.fileio import atomic_write_json, read_json
from cognimamba.system.version import VERSION

BFCL_PREFIX = "bfcl-"
REFUSED_FOR_CONTEXT = "context_length_exceeded"  # the error code serve/routes.py answers a prompt too long with
INFERENCE_ERROR = "Error during inference"  # how BFCL's generation records a case whose request failed
RESULT_FILE = re.compile(r"^BFCL_v\d+_(?P<category>.+)_result\.json$")
SCORE_FILE = re.compile(r"^BFCL_v\d+_(?P<category>.+)_score\.json$")


def new_bfcl_stem(run: Path) -> str:
    """`bfcl-YYYYMMDD-HHMMSS`, with a suffix when that summary or folder exists already."""
    folder = Path(run) / EVAL_DIR
    stem = f"{BFCL_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, counter = stem, 1
    while (folder / f"{candidate}.json").exists() or (folder / candidate).exists():
        counter += 1
        candidate = f"{stem}-{counter}"
    return candidate


def read_lines(path: Path) -> list[dict[str, Any]]:
    """BFCL's files: one JSON object per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def files_by_category(folder: Path, pattern: re.Pattern[str]) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        match = pattern.match(path.name)
        if match and "prereq" not in match["category"]:
            found[match["category"]] = path
    return found


def is_refused_for_context(result: Any) -> bool:
    return isinstance(result, str) and result.startswith(INFERENCE_ERROR) and REFUSED_FOR_CONTEXT in result


def flat_numbers(value: Any) -> list[float]:
    """A case's latencies: one number, or (multi-turn cases) one per request, in nested lists."""
    if isinstance(value, list):
        return [number for item in value for number in flat_numbers(item)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


def category_score(results: list[dict[str, Any]], score_lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One category's figures from BFCL's result lines and its score file (a header, then the failed cases)."""
    header, failures = score_lines[0], score_lines[1:]
    failed = {entry.get("id") for entry in failures}
    refused = [entry["id"] for entry in results if is_refused_for_context(entry.get("result"))]
    errors = [entry["id"] for entry in results
              if isinstance(entry.get("result"), str) and entry["result"].startswith(INFERENCE_ERROR)
              and entry["id"] not in refused]
    refused_scored_correct = [case for case in refused if case not in failed]
    correct, total = int(header["correct_count"]), int(header["total_count"])
    latencies = [seconds for entry in results for seconds in flat_numbers(entry.get("latency"))]
    return {"accuracy": header["accuracy"], "correct": correct, "total": total,
            "refused_for_context": len(refused), "refused_scored_correct": len(refused_scored_correct),
            "accuracy_refused_as_wrong": (correct - len(refused_scored_correct)) / total if total else None,
            "errors": len(errors),  # requests that failed otherwise (BFCL scores them as wrong answers)
            "mean_latency_seconds": statistics.fmean(latencies) if latencies else None,  # per request
            "refused_ids": refused, "error_ids": errors}


def summarize_bfcl(result_dir: Path, score_dir: Path, settings: dict[str, Any], bfcl_version: str) -> dict[str, Any]:
    """The summary `cogni eval --bfcl` saves, from BFCL's result and score folders of one model."""
    results = files_by_category(result_dir, RESULT_FILE)
    scores = files_by_category(score_dir, SCORE_FILE)
    categories = {name: category_score(read_lines(results[name]), read_lines(scores[name]))
                  for name in sorted(scores) if name in results}
    cases = sum(entry["total"] for entry in categories.values())
    seconds = settings.get("generation_seconds")
    return {"kind": "bfcl", "cognimamba_version": VERSION, "bfcl_eval_version": bfcl_version,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, "categories": categories,
            "cases": cases, "refused_for_context": sum(entry["refused_for_context"] for entry in categories.values()),
            "seconds_per_case": seconds / cases if cases and isinstance(seconds, int | float) else None}


def save_bfcl(run: Path, stem: str, summary: dict[str, Any]) -> Path:
    path = Path(run) / EVAL_DIR / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, summary)
    return path


def latest_bfcl(run: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest saved BFCL summary of a run, or None when `cogni eval --bfcl` never ran on it."""
    folder = Path(run) / EVAL_DIR
    files = sorted(folder.glob(f"{BFCL_PREFIX}*.json"), key=lambda path: (path.stat().st_mtime, path.name)) \
        if folder.is_dir() else []
    if not files:
        return None
    return files[-1], read_json(files[-1], "cogni eval --bfcl results")


def bfcl_scores(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{category: figures} without the case ids: what `--json` prints."""
    return {name: {key: value for key, value in entry.items() if not key.endswith("_ids")}
            for name, entry in summary.get("categories", {}).items()}


def bfcl_line(summary: dict[str, Any]) -> str:
    """One line per run for a table cell: each category's accuracy and counts, and the refusals."""
    parts = [f"{name} {entry['accuracy']:.3f} ({entry['correct']}/{entry['total']})"
             for name, entry in summary.get("categories", {}).items()]
    refused = summary.get("refused_for_context", 0)
    return ", ".join(parts) + (f"; {refused} refused for context" if refused else "")


def bfcl_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(box=box.MARKDOWN, title=title, title_justify="left")
    for column in ("Category", "Accuracy", "Correct", "Refused for context", "Refused as wrong", "Errors",
                   "Latency s"):  # a request's mean seconds, with others in flight beside it
        table.add_column(column, justify="left" if column == "Category" else "right", no_wrap=True)
    for name, entry in summary.get("categories", {}).items():
        as_wrong = entry.get("accuracy_refused_as_wrong")
        latency = entry.get("mean_latency_seconds")
        table.add_row(name, f"{entry['accuracy']:.4f}", f"{entry['correct']}/{entry['total']}",
                      str(entry["refused_for_context"]), "N/A" if as_wrong is None else f"{as_wrong:.4f}",
                      str(entry["errors"]), "N/A" if latency is None else f"{latency:.2f}")
    return table
