"""Ctrl+C and SIGTERM end training at a step boundary, with a checkpoint, on every rank alike."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import torch

from cognimamba.errors import CogniError
from cognimamba.train.distributed import DistributedContext, agree_max


class TrainingInterrupted(CogniError):
    """Ctrl+C or SIGTERM: a checkpoint was saved; exit 130 / 143."""


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so saving never races training."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second Ctrl+C stops at once
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, context: DistributedContext, device: torch.device) -> int | None:
        """The signal any rank received: ranks stop at the same step, or the next collective would hang."""
        signum = int(agree_max(float(self.received or 0), context, device))
        return signum or None


def interrupted_error(signum: int, step: int, saved: Path | None, data: Path, run: Path) -> TrainingInterrupted:
    """The one line that says where training stopped and the command that continues it."""
    name, code = ("Ctrl+C", 130) if signum == signal.SIGINT else ("SIGTERM", 143)
    return TrainingInterrupted(f"{name}: stopped at step {step}, checkpoint saved to {saved}; continue with "
                               f"`cogni train --data {data} --out {run} --resume`", exit_code=code)
