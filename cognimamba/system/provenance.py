"""Where a run came from: the command line, the code version and the machine, as `train` records them in
config.json ("provenance") for the report card to read back."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cognimamba.system.hardware import device_name
from cognimamba.system.version import VERSION

CHECKOUT = Path(__file__).resolve().parents[2]  # the source tree, when cognimamba runs from a git checkout


def command_line(argv: list[str] | None = None) -> str:
    """The command as the user typed it: `cogni ...`, also when started as `python -m cognimamba`."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name if argv else "cogni"
    if program in ("cogni", "__main__.py", "cognimamba"):
        program = "cogni"
    return shlex.join([program, *argv[1:]])


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, timeout=5,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """The package version; with the git commit (and whether files differ from it) in a source checkout only, so
    an installed cognimamba never reports the commit of whatever repository happens to hold it."""
    version: dict[str, Any] = {"version": VERSION}
    if (CHECKOUT / ".git").exists() and (CHECKOUT / "pyproject.toml").is_file():
        commit = _git("rev-parse", "--short=12", "HEAD")
        if commit:
            changes = _git("status", "--porcelain", "--untracked-files=no")
            version.update(git_commit=commit, git_dirty=bool(changes))
    return version


def machine(device: torch.device) -> dict[str, Any]:
    """The hardware and software a run trained on: device, cores and threads, and the versions that matter."""
    info: dict[str, Any] = {"device": device_name(device), "device_type": device.type, "cpu_cores": os.cpu_count(),
                            "threads": torch.get_num_threads(), "platform": platform.platform(terse=True),
                            "python": platform.python_version(), "torch": torch.__version__}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, gpu_memory_bytes=properties.total_memory, cuda=torch.version.cuda)
    return info


def provenance(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    return {"command_line": command_line(), "code": code_version(), "machine": machine(device),
            "world_size": world_size, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
