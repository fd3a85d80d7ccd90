"""Per-user directories (platformdirs), overridable with COGNI_HOME for tests and portable installs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

APP_NAME = "cognimamba"


def _home_override() -> Path | None:
    value = os.environ.get("COGNI_HOME")
    return Path(value) if value else None


def cache_dir() -> Path:
    override = _home_override()
    return override / "cache" if override else Path(platformdirs.user_cache_dir(APP_NAME))


def user_data_dir() -> Path:
    """The app's own per-user files (chat history); not a prepared data dir."""
    override = _home_override()
    return override / "data" if override else Path(platformdirs.user_data_dir(APP_NAME))


def prepared_corpus_dir(label: str, key: str) -> Path:
    """Where `cogni prepare` puts a data dir when no --out is given: the per-user cache, keyed by its inputs."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(label).stem)[:40] or "corpus"
    return cache_dir() / "datasets" / f"{stem}-{key[:10]}"


def default_runs_dir() -> Path:
    override = _home_override()
    return override / "runs" if override else Path.cwd() / "runs"
