"""RUN/eval/*.json of every kind, read back together for the report card: lm-eval (`cogni eval --tasks`, its format
in harness_results), BFCL (`eval/bfcl*.json`) and the held-out chat eval, which is saved here too."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cognimamba.evaluation.harness_results import EVAL_DIR
from cognimamba.system.fileio import atomic_write_json
from cognimamba.system.version import VERSION

CHAT_EVAL_FILE = "chat_eval.json"


@dataclass
class SavedEval:
    path: Path
    kind: str  # "lm-eval", "bfcl", "chat-eval" or "other"
    payload: dict[str, Any]


def kind_of(path: Path, payload: dict[str, Any]) -> str:
    """By name where the writer chose one (bfcl*.json, chat_eval*.json), else by what the file holds."""
    if path.name.startswith("bfcl") or payload.get("kind") == "bfcl":
        return "bfcl"
    if path.name.startswith("chat_eval") or "turn_taking_rate" in payload:
        return "chat-eval"
    if isinstance(payload.get("tasks"), dict):
        return "lm-eval"
    return "other"


def saved_evals(run: Path) -> list[SavedEval]:
    """Every readable JSON object in RUN/eval/, oldest first; a damaged file is left out, not fatal."""
    folder = Path(run) / EVAL_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json"), key=lambda path: (path.stat().st_mtime, path.name)):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(payload, dict):
            found.append(SavedEval(path, kind_of(path, payload), payload))
    return found


def save_chat_eval(run: Path, metrics: dict[str, Any], source: str, summary: str) -> Path:
    """RUN/eval/chat_eval.json: the latest held-out chat eval (turn-taking and tool-call rates), without examples."""
    path = Path(run) / EVAL_DIR / CHAT_EVAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = {key: value for key, value in metrics.items() if key != "examples"}
    atomic_write_json(path, {"cognimamba_version": VERSION, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "file": source, "summary": summary, **figures})
    return path
