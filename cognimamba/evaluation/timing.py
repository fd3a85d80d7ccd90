"""How speed is timed, once, for `cogni bench` and the side-by-side comparisons in `benchmarks/`.

Two ways, both with a warm-up that is not counted:

- `warm_then_repeat`: llama-bench's way, one toolkit alone. One run warms up (and compiles, where a step is
  compiled), then each repetition is one sample.
- `interleaved`: two toolkits on one machine. Every repetition runs each test on both sides back to back,
  alternating which goes first (A B, B A, ...), so a neighbour's burst on a shared machine hits both alike, and a
  short test repeats inside a sample until it lasts `min_seconds`, so it is not at the mercy of one scheduler tick.

Every timed call is bracketed by a device synchronisation: work a GPU still has queued belongs to the call that
queued it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import torch

from cognimamba.system.hardware import synchronize

CPU = torch.device("cpu")


def seconds_per_call(run: Callable[[], object], device: torch.device = CPU, calls: int = 1) -> float:
    """Seconds per call, averaged over `calls` back-to-back calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        run()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def warm_then_repeat(run: Callable[[], object], repetitions: int, device: torch.device = CPU,
                     on_run: Callable[[], None] = lambda: None) -> tuple[float, list[float]]:
    """The warm-up run's seconds, then each of `repetitions` runs' seconds; `on_run()` after every run."""
    warmup = seconds_per_call(run, device)
    on_run()
    seconds = []
    for _ in range(repetitions):
        seconds.append(seconds_per_call(run, device))
        on_run()
    return warmup, seconds


@dataclass
class Side:
    """One toolkit (or one model on it) in a comparison: a runner per test, and its samples in tokens/s."""

    name: str
    runners: dict[str, Callable[[], object]]
    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, test: str) -> float:
        return statistics.median(self.samples[test])


def interleaved(groups: Sequence[Sequence[Side]], tokens: dict[str, int], repetitions: int, min_seconds: float,
                device: torch.device = CPU, progress: Callable[[str], None] = lambda text: None) -> None:
    """Fill each side's samples (tokens/s) for every test in `tokens`, the sides of a group compared with each other.

    Repetition 0 warms every runner up and sizes the samples: a test's calls per sample are what makes its fastest
    side take about `min_seconds`, the same count on every side. Then each repetition runs every test, and within a
    test every group's sides back to back, in turn first.
    """
    calls = {}
    for test in tokens:
        fastest = min(seconds_per_call(side.runners[test], device) for group in groups for side in group)
        calls[test] = max(1, round(min_seconds / max(fastest, 1e-6)))
    progress("warm-up")
    for repetition in range(1, repetitions + 1):
        for test, count in tokens.items():
            for group in groups:
                for side in group if repetition % 2 else group[::-1]:
                    seconds = seconds_per_call(side.runners[test], device, calls[test])
                    side.samples.setdefault(test, []).append(count / seconds)
        progress(f"repetition {repetition}/{repetitions}")


def spread(samples: Sequence[float]) -> float:
    """The samples' standard deviation (0 for one sample)."""
    return statistics.stdev(samples) if len(samples) > 1 else 0.0


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Collection[int] = ()) -> str:
    """A Markdown table, the columns numbered in `numeric` right-aligned."""
    rule = ["---:" if column in numeric else "---" for column in range(len(header))]
    return "\n".join(f"| {' | '.join(cells)} |" for cells in (header, rule, *rows))
