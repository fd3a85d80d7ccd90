"""lm-eval results kept beside a run (RUN/eval/*.json): written by `cogni eval`, read back by `cogni test-model`.

Apart from evaluation/harness.py, so reading figures back needs no lm-eval installed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from cognimamba.system.fileio import atomic_write_json, read_json
from cognimamba.system.version import VERSION

EVAL_DIR = "eval"


@dataclass
class MetricRow:
    """One line of lm-eval's table."""

    task: str
    version: str
    filter: str
    n_shot: str
    metric: str
    value: float | None
    stderr: float | None
    higher_is_better: bool | None


def _number(value: Any) -> float | None:
    """A finite float, or None for lm-eval's "N/A" and the like."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def summarize(results: dict[str, Any], settings: dict[str, Any], lm_eval_version: str) -> dict[str, Any]:
    """lm-eval's results as a small JSON object: per task its version, shots and metrics (value, stderr)."""
    tasks: dict[str, Any] = {}
    for task, figures in results.get("results", {}).items():
        metrics: dict[str, Any] = {}
        for key, value in figures.items():
            if "," not in key or "_stderr," in key:
                continue  # "alias", "samples" and the stderr entries, read beside their metric
            metric, filter_name = key.split(",", 1)
            metrics[key] = {"metric": metric, "filter": filter_name, "value": _number(value),
                            "stderr": _number(figures.get(f"{metric}_stderr,{filter_name}")),
                            "higher_is_better": results.get("higher_is_better", {}).get(task, {}).get(metric)}
        tasks[task] = {"alias": figures.get("alias", task), "version": results.get("versions", {}).get(task),
                       "n_shot": results.get("n-shot", {}).get(task), "metrics": metrics}
    return {"cognimamba_version": VERSION, "lm_eval_version": lm_eval_version,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, "tasks": tasks}


def metric_rows(summary: dict[str, Any]) -> list[MetricRow]:
    rows = []
    for task, entry in summary.get("tasks", {}).items():
        for metric in entry.get("metrics", {}).values():
            rows.append(MetricRow(task=str(entry.get("alias") or task), version=str(entry.get("version", "")),
                                  filter=str(metric["filter"]), n_shot=str(entry.get("n_shot", "")),
                                  metric=str(metric["metric"]), value=metric["value"], stderr=metric["stderr"],
                                  higher_is_better=metric.get("higher_is_better")))
    return rows


def metric_values(summary: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{task: {metric: {"value", "stderr"}}}: what `cogni eval --json` prints (filter named when not "none")."""
    values: dict[str, dict[str, dict[str, float | None]]] = {}
    for task, entry in summary.get("tasks", {}).items():
        for metric in entry.get("metrics", {}).values():
            name = metric["metric"] if metric["filter"] == "none" else f"{metric['metric']},{metric['filter']}"
            values.setdefault(task, {})[name] = {"value": metric["value"], "stderr": metric["stderr"]}
    return values


def save_results(run: Path, summary: dict[str, Any]) -> Path:
    """RUN/eval/YYYYMMDD-HHMMSS.json; a second run in the same second gets a suffix rather than overwriting."""
    folder = Path(run) / EVAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stem}.json"
    counter = 1
    while path.exists():
        counter += 1
        path = folder / f"{stem}-{counter}.json"
    atomic_write_json(path, summary)
    return path


def latest_results(run: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest saved results of a run, or None when `cogni eval` never ran on it."""
    folder = Path(run) / EVAL_DIR
    # lm-eval's files are named by date (save_results); bfcl*.json and chat_eval.json beside them are other evals
    ours = [path for path in folder.glob("*.json") if path.name[:1].isdigit()] if folder.is_dir() else []
    files = sorted(ours, key=lambda path: (path.stat().st_mtime, path.name))
    if not files:
        return None
    return files[-1], read_json(files[-1], "cogni eval results")


def results_table(summary: dict[str, Any], title: str) -> Table:
    """lm-eval's own table (task, version, filter, n-shot, metric, value ± stderr), drawn by Rich."""
    table = Table(box=box.MARKDOWN, title=title, title_justify="left")
    for column in ("Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"):
        table.add_column(column, justify="right" if column in ("Value", "Stderr", "n-shot") else "left", no_wrap=True)
    for row in metric_rows(summary):
        arrow = "" if row.higher_is_better is None else "↑" if row.higher_is_better else "↓"
        value = "N/A" if row.value is None else f"{row.value:.4f}"
        stderr = "N/A" if row.stderr is None else f"{row.stderr:.4f}"
        table.add_row(row.task, row.version, row.filter, row.n_shot, row.metric, arrow, value, "±", stderr)
    return table
