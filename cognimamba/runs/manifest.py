"""manifest.json: sizes and hashes of a directory's files, written last, checked on load."""

from __future__ import annotations

import json
from pathlib import Path

from cognimamba.errors import CogniError
from cognimamba.runs.layout import MANIFEST
from cognimamba.system.fileio import (
    atomic_write_json,
    safe_child,
    sha256_file,
)


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
