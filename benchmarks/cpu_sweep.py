"""One row of the `cpu` profile's sweep table (benchmarks/RESULTS.md, "CPU profile sweeps (issue 14)").

    python benchmarks/cpu_sweep.py --list                       # the planned rows and what each changes
    python benchmarks/cpu_sweep.py muon --seed 1                # one row: prepare (cached), train 10m, test-model
    python benchmarks/cpu_sweep.py baseline --seed 2 --json     # the same as one JSON line
    python benchmarks/cpu_sweep.py custom --set train.lr=4e-3   # any other --set overrides, under a name of yours

Each row runs what a user types, through the CLI: `cogni prepare TRAIN --val VAL --vocab-size V` (reused when
nothing changed), `cogni train --profile cpu --max-time 10m --set train.seed=SEED --set ...` and
`cogni test-model RUN --json`, whose bits/byte cover the whole validation file. It prints the row as a Markdown
table line (command, steps, tokens, val bits/byte) to paste into benchmarks/RESULTS.md. Run rows one at a time on an
otherwise idle machine: a neighbour's load changes how many steps fit in the budget, and so the figure.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repository


@dataclass(frozen=True)
class Row:
    lever: str
    overrides: tuple[str, ...] = ()
    vocab_size: int = 4096  # the cpu profile's; a different one is a different prepared data dir


# Shapes at about the cpu profile's 4.35M non-embedding parameters (dim 256 x 6 layers): wider and shallower,
# narrower and deeper, with 32-wide heads throughout.
WIDE = ("model.dim=320", "model.n_layers=4", "model.n_heads=10", "model.n_kv_heads=5", "model.ffn_dim=864")
DEEP = ("model.dim=192", "model.n_layers=10", "model.n_heads=6", "model.n_kv_heads=3", "model.ffn_dim=544")
MUON = "train.optimizer=muon"
# Issue 18's mixers at the profile's total parameters (5.40M, within 1.5%): Mamba-2 layers keep their MLP, so the
# MLP narrows to pay for the mixer (expand 2, as Mamba-2 ships); the fixed-point model is sized by its updater.
MAMBA = ("model.layer_pattern=MMMMMM", "model.ffn_dim=384")  # 5.41M
HYBRID = ("model.layer_pattern=MMAMMA", "model.ffn_dim=480")  # 5.38M, 2 attention layers of 6
FIXED_POINT = ("model.arch=fixed_point", "model.fixed_point_layers=2", "model.fixed_point_context_dim=320",
               "model.fixed_point_hidden_dim=768")  # 5.33M

ROWS: dict[str, Row] = {
    "baseline": Row("the cpu profile as it is"),
    "muon": Row("optimizer", (MUON,)),
    "muon-lr6e-3": Row("optimizer", (MUON, "train.muon_lr=6e-3")),
    "muon-lr1.2e-2": Row("optimizer", (MUON, "train.muon_lr=1.2e-2")),
    "muon-original-lr2e-2": Row("optimizer", (MUON, "train.muon_adjust_lr=original", "train.muon_lr=2e-2")),
    "muon-fp32": Row("optimizer", (MUON, "train.muon_precision=fp32")),
    "muon-ns3": Row("optimizer", (MUON, "train.muon_ns_steps=3")),
    "muon-compile": Row("optimizer", (MUON, "train.compile=true")),
    "lr2e-3": Row("learning rate", ("train.lr=2e-3",)),
    "lr5e-3": Row("learning rate", ("train.lr=5e-3",)),
    "warmup50": Row("warmup", ("train.warmup_steps=50",)),
    "warmup200": Row("warmup", ("train.warmup_steps=200",)),
    "wide-4x320": Row("shape", WIDE),
    "deep-10x192": Row("shape", DEEP),
    "batch8": Row("batch size", ("train.micro_batch_size=8",)),
    "batch32": Row("batch size", ("train.micro_batch_size=32",)),
    "wd0": Row("weight decay", ("train.weight_decay=0.0",)),
    "wd0.2": Row("weight decay", ("train.weight_decay=0.2",)),
    "dropout0.1": Row("dropout", ("model.dropout=0.1",)),
    "dropout0.2": Row("dropout", ("model.dropout=0.2",)),
    "vocab2048": Row("vocabulary", (), vocab_size=2048),
    "vocab8192": Row("vocabulary", (), vocab_size=8192),
    "compile": Row("compiled step", ("train.compile=true",)),
    "bf16": Row("precision", ("train.precision=bf16",)),  # autocast; pays only where the CPU has native bf16
    # The levers that won the 3-minute screen, together (benchmarks/RESULTS.md): three of them, and all four.
    "bf16-batch8-wide": Row("combined", ("train.precision=bf16", "train.micro_batch_size=8", *WIDE)),
    "bf16-batch8-wide-lr5e-3": Row("combined", ("train.precision=bf16", "train.micro_batch_size=8", *WIDE,
                                                "train.lr=5e-3")),
    "mamba2": Row("sequence mixer", MAMBA),
    "hybrid": Row("sequence mixer", HYBRID),
    "fixed-point": Row("sequence mixer", FIXED_POINT),
}


def cogni(*args: str) -> subprocess.CompletedProcess:
    """`cogni ARGS` as a subprocess of this interpreter; stderr passes through, so progress stays visible."""
    return subprocess.run([sys.executable, "-m", "cognimamba", *args], stdout=subprocess.PIPE, text=True)


def prepare(train_file: Path, val_file: Path, vocab_size: int, work: Path) -> Path:
    data = work / f"data-tinystories-v{vocab_size}"
    result = cogni("prepare", str(train_file), "--val", str(val_file), "--vocab-size", str(vocab_size),
                   "--out", str(data))
    if result.returncode != 0:
        sys.exit(f"cogni prepare failed (exit {result.returncode})")
    return data


def run_row(name: str, row: Row, seed: int, max_time: str, data: Path, work: Path) -> dict:
    run = work / "runs" / f"{name}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = [f"train.seed={seed}", *row.overrides]
    train_args = ["train", "--profile", "cpu", "--data", str(data), "--max-time", max_time, "--out", str(run),
                  "--quiet", *[arg for item in settings for arg in ("--set", item)]]
    if cogni(*train_args).returncode != 0:
        sys.exit(f"cogni train failed for row {name}")
    tested = cogni("test-model", str(run), "--json")
    if not tested.stdout.strip():
        sys.exit(f"cogni test-model printed nothing for {run} (exit {tested.returncode})")
    report = json.loads(tested.stdout)
    state = json.loads((run / "trainer_state.json").read_text())
    return {"row": name, "lever": row.lever, "overrides": list(row.overrides), "vocab_size": row.vocab_size,
            "seed": seed, "max_time": max_time, "steps": state["step"], "tokens": state["tokens_seen"],
            "elapsed": state["elapsed"], "val_bits_per_byte": report.get("bits_per_byte"),
            "val_loss": report.get("val_loss"), "eval_tokens": report.get("eval_tokens"), "run": str(run),
            "train_command": shlex.join(["cogni", *train_args])}


def table_row(result: dict) -> str:
    command = f"`python benchmarks/cpu_sweep.py {result['row']} --seed {result['seed']}"
    command += f" --max-time {result['max_time']}`" if result["max_time"] != "10m" else "`"
    changes = ", ".join(f"`{item}`" for item in result["overrides"]) or "-"
    if result["vocab_size"] != 4096:
        changes = f"`--vocab-size {result['vocab_size']}`"
    bits = result["val_bits_per_byte"]
    shown = f"{bits:.4f}" if bits is not None else "n/a"
    return (f"| {result['row']} | {result['lever']} | {changes} | {command} | {result['steps']:,} | "
            f"{result['tokens']:,} | {shown} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", nargs="?", help="a row name (--list shows them), or a name of yours with --set")
    parser.add_argument("--seed", type=int, default=1, help="train.seed (the figure is the median of seeds 1-3)")
    parser.add_argument("--max-time", default="10m", help="the training budget (1m for a smoke test)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra section.field=value")
    parser.add_argument("--train-file", type=Path, default=SHARED_DATA / "tinystories_train.txt",
                        help="TinyStories training text (default: ../shared/data/tinystories_train.txt)")
    parser.add_argument("--val-file", type=Path, default=SHARED_DATA / "tinystories_valid.txt",
                        help="TinyStories validation text (default: ../shared/data/tinystories_valid.txt)")
    parser.add_argument("--work", type=Path, default=Path("runs/sweep"), help="where data dirs and runs go")
    parser.add_argument("--list", action="store_true", help="print the planned rows and exit")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table row")
    args = parser.parse_args()
    if args.list or not args.row:
        for name, row in ROWS.items():
            print(f"{name:22} {row.lever:14} {' '.join(row.overrides) or '-'}"
                  + (f" (--vocab-size {row.vocab_size})" if row.vocab_size != 4096 else ""))
        return
    row = ROWS.get(args.row, Row("custom"))
    if args.row not in ROWS and not args.overrides:
        sys.exit(f"unknown row {args.row!r}: pick one of --list, or name your own and give --set overrides")
    row = Row(row.lever, (*row.overrides, *args.overrides), row.vocab_size)
    for text_file in (args.train_file, args.val_file):
        if not text_file.is_file():
            sys.exit(f"{text_file}: not found; give TinyStories text files with --train-file and --val-file "
                     "(roneneldan/TinyStories' TinyStories-train.txt and -valid.txt, or slices of them)")
    data = prepare(args.train_file, args.val_file, row.vocab_size, args.work)
    result = run_row(args.row, row, args.seed, args.max_time, data, args.work)
    print(json.dumps(result) if args.json else table_row(result))


if __name__ == "__main__":
    main()
