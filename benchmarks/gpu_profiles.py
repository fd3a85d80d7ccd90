"""Every GPU profile on this GPU: pp512, tg128, training tokens/sec, MFU, and peak memory against its budget.

    python benchmarks/gpu_profiles.py [--profiles 4gb,6gb,8gb,12gb] [-r 5] [--compile] [--out DIR]

Each profile runs `cogni bench --profile P --train --no-compile --json` in its own process (so one profile's
cached CUDA memory never counts against the next), and with --compile a second run of compiled training
(as `cogni train` runs GPU profiles). The table
says whether the profile's peak training memory fits its budget: the CUDA caching allocator's peak
reservation (`peak_reserved_bytes` in `cogni bench --json`, a little above max allocated) plus the CUDA
context, which a card of that size also has to hold. The raw JSON of every run
goes to --out. Needs a CUDA GPU with room for the largest profile asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cognimamba.config.profiles import BUDGET_GIB, GIB

# What a CUDA context takes besides PyTorch's allocations (driver, cuBLAS and cuDNN workspaces): measured
# as the gap between nvidia-smi's used memory and torch's reserved memory, 0.5-0.6 GB on recent drivers.
CUDA_CONTEXT_GIB = 0.6


def bench(profile: str, repetitions: int, compile: bool) -> dict[str, Any]:
    """One `cogni bench` process: eager pp, tg and training, or (`compile`) compiled training alone."""
    command = [sys.executable, "-m", "cognimamba", "bench", "--profile", profile, "--train", "--json",
               "-r", str(repetitions)]
    command += ["--compile", "-p", "0", "-n", "0"] if compile else ["--no-compile"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]}
    report = json.loads(done.stdout)
    report["seconds"] = time.perf_counter() - started
    return report


def test_row(report: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    return next((row for row in report.get("tests", []) if row["test"].startswith(prefix)), None)


def peak_gib(row: dict[str, Any]) -> float:
    """What the card must hold for training: the allocator's peak reservation, a little above what tensors took."""
    return max(row["peak_memory_bytes"], row.get("peak_reserved_bytes") or 0) / GIB


def rate(row: dict[str, Any] | None) -> str:
    return f"{row['mean']:,.0f} ± {row['std']:,.0f}" if row else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", default=",".join(BUDGET_GIB))
    parser.add_argument("-r", "--repetitions", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also a compiled training run per profile")
    parser.add_argument("--out", type=Path, default=None, help="write each run's JSON report here")
    args = parser.parse_args()

    console = Console(width=200)
    table = Table(title="GPU profiles: speed and peak training memory")
    for column in ("profile", "params", "pp512 t/s", "tg128 t/s", "train t/s", "MFU", "peak reserved",
                   "+ context", "budget", "fits", "compiled train t/s", "compiled MFU", "compiled peak reserved"):
        table.add_column(column, justify="left" if column in ("profile", "fits") else "right")
    for profile in args.profiles.split(","):
        eager = bench(profile, args.repetitions, compile=False)
        compiled = bench(profile, args.repetitions, compile=True) if args.compile else {}
        for name, report in (("eager", eager), ("compiled", compiled)):
            if args.out and report:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"{profile}_{name}.json").write_text(json.dumps(report, indent=1))
            if "error" in report:
                console.print(f"[red]{profile} {name}: {report['error']}[/]")
        train, compiled_train = test_row(eager, "train"), test_row(compiled, "train")
        peak = peak_gib(train) if train else None
        budget = BUDGET_GIB.get(profile)
        fits = "-" if peak is None or budget is None else ("yes" if peak + CUDA_CONTEXT_GIB <= budget else "NO")
        table.add_row(
            profile, f"{eager.get('parameters', 0) / 1e6:.0f}M", rate(test_row(eager, "pp")),
            rate(test_row(eager, "tg")), rate(train), f"{train['mfu']:.1%}" if train else "-",
            f"{peak:.2f} GiB" if peak is not None else "-",
            f"{peak + CUDA_CONTEXT_GIB:.2f} GiB" if peak is not None else "-",
            f"{budget:.0f} GiB" if budget else "-", fits, rate(compiled_train),
            f"{compiled_train['mfu']:.1%}" if compiled_train else "-",
            f"{peak_gib(compiled_train):.2f} GiB" if compiled_train else "-")
    console.print(table)
    if eager.get("device_name"):
        console.print(f"device: {eager['device_name']}; matmul peak {eager.get('peak_flops', 0) / 1e12:.0f} TFLOP/s "
                      "(measured by each bench run; MFU is against it)")


if __name__ == "__main__":
    main()
