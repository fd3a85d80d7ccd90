"""metrics.jsonl: one JSON object per log/eval row, appended while training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cognimamba.errors import CogniError
from cognimamba.runs.layout import METRICS
from cognimamba.system.fileio import (
    atomic_write_text,
    disk_errors,
)


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
