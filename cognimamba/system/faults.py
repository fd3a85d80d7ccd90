"""Fault injection for the crash-safety tests: make the process SIGKILL itself at one chosen moment.

    COGNI_FAULT=kill-during-save@20      inside the save of checkpoint step 20, after its weights are written
    COGNI_FAULT=kill-during-best-swap@20 between the two renames that replace best/ at step 20
    COGNI_FAULT=kill-after-step@27       right after optimizer step 27 is logged (between two checkpoints)

Without `@STEP` the first time the point is reached counts. A kill from outside can only hit such moments by
luck; this lets tests prove that the worst ones lose nothing. Unset (as for every user) it is one dict lookup.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "COGNI_FAULT"


def kill_point(point: str, step: int | None = None) -> None:
    """SIGKILL this process if COGNI_FAULT names `kill-<point>` (and its step, if given)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, at = spec.partition("@")
    if name != f"kill-{point}" or (at and step is not None and at.strip() != str(step)):
        return
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
