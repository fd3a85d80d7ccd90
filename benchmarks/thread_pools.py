"""A model's one-row decoding step on the thread that loaded it, on a second thread, and on a second thread after
loading on a thread that ended (system/hardware.on_passing_thread).

    python benchmarks/thread_pools.py RUN [--weights fp32|int8|bf16] [--rounds 2] [--steps 40]

libgomp keeps OpenMP workers for each thread that has run a parallel operation; with more of them than cores it
stops them spinning between operations. Each case runs in a process of its own (the pools live as long as their
threads), the cases in turns, and each prints the median milliseconds of its steps (after 5 warm-up steps) on the
threads the step's own rule picks (DecodeStep). Results go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from cognimamba.inference.batching import BatchEngine
from cognimamba.inference.weights import apply_weight_format
from cognimamba.runs.loading import load_run
from cognimamba.system.hardware import on_passing_thread

CASES = ("loading thread", "second thread", "second thread, loaded on a passing one")


def step_milliseconds(run: Path, weights: str, steps: int, case: str) -> float:
    """Load `run` and time its one-row step as `case` says, in this process."""
    def load() -> BatchEngine:
        model = load_run(run).model
        apply_weight_format(model, weights)
        return BatchEngine(model, None, 8)

    engine = on_passing_thread(load) if case == CASES[2] else load()
    step, cache = engine.one_slot_step, engine.cache.rows(0, 1)
    token = torch.zeros((1, 1), dtype=torch.long)
    times: list[float] = []

    def time_steps() -> None:
        with torch.no_grad():
            for index in range(steps + 5):
                started = time.perf_counter()
                step(token, cache, 10)
                if index >= 5:
                    times.append(time.perf_counter() - started)

    if case == CASES[0]:
        time_steps()
    else:
        thread = threading.Thread(target=time_steps)
        thread.start()
        thread.join()
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--weights", default="fp32", choices=["fp32", "bf16", "int8"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args()
    if args.case:
        print(f"{step_milliseconds(args.run, args.weights, args.steps, args.case):.2f}")
        return
    results: dict[str, list[str]] = {case: [] for case in CASES}
    for _ in range(args.rounds):
        for case in CASES:
            child = subprocess.run([sys.executable, __file__, str(args.run), "--weights", args.weights, "--steps",
                                    str(args.steps), "--case", case], capture_output=True, text=True, check=True)
            results[case].append(child.stdout.strip().splitlines()[-1])
    print(f"| {args.run.name}, {args.weights}, one-row step (ms, median of {args.steps}) | "
          + " | ".join(f"round {index + 1}" for index in range(args.rounds)) + " |")
    print("|---|" + "---:|" * args.rounds)
    for case, values in results.items():
        print(f"| {case} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
