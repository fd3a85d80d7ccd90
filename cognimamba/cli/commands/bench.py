"""`cogni bench`: prompt processing, generation and training speed, measured like llama-bench."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import JsonOption, stderr, stdout

ListOption = list[str] | None


def bench_command(
    run: Annotated[Path | None, typer.Argument(help="run dir to measure (or --profile)")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="random-weight model of a profile: cpu, 4gb, "
                                                "6gb, 8gb, 12gb or auto")] = None,
    n_prompt: Annotated[ListOption, typer.Option("-p", "--n-prompt", help="prompt lengths, e.g. 128,512 "
                                                 "(0 skips pp; default 512)")] = None,
    n_gen: Annotated[ListOption, typer.Option("-n", "--n-gen", help="generated lengths (0 skips tg; "
                                              "default 128)")] = None,
    batch: Annotated[ListOption, typer.Option("-b", "--batch", help="sequences in parallel for pp/tg "
                                              "(default 1)")] = None,
    repetitions: Annotated[int, typer.Option("-r", "--repetitions", min=1, help="timed runs per test, after "
                                             "one warm-up")] = 5,
    train: Annotated[bool, typer.Option("--train", help="also measure training tokens/sec, MFU and peak "
                                        "memory at the config's micro-batch and sequence length")] = False,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the decoding step "
                                                 "(tg) and the training step, or neither (default: tg eager, "
                                                 "training as the profile says); warm-up runs compile and are "
                                                 "reported apart")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16 "
                                       "or fp16")] = "auto",
    threads: Annotated[int | None, typer.Option("-t", "--threads", min=1, help="CPU threads, decoding's too "
                                                "(default: torch's; decoding: one per 32 MB of weights)")] = None,
    weights: Annotated[str, typer.Option("--weights", help="pp/tg with the weights as fp32, bf16 (weights only "
                                         "on CPUs without native bf16) or int8 (needs torchao), as `cogni chat "
                                         "--weights` holds them")] = "fp32",
    as_json: JsonOption = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="print CSV rows for spreadsheets")] = False,
) -> None:
    """Measure pp (prefill) and tg (decode) tokens/sec, and with --train training speed: mean ± std over -r runs."""
    import torch

    from cognimamba.errors import CogniError
    from cognimamba.evaluation.bench import (
        BenchOptions,
        inference_dtype,
        load_bench_model,
        parse_int_list,
        run_bench,
        total_runs,
    )
    from cognimamba.system.console import make_progress
    from cognimamba.system.hardware import pick_device

    if as_json and as_csv:
        raise CogniError("--json and --csv: choose one output format")
    options = BenchOptions(prompt_lengths=parse_int_list(n_prompt, "-p", [512]),
                           generation_lengths=parse_int_list(n_gen, "-n", [128]),
                           batch_sizes=parse_int_list(batch, "-b", [1], minimum=1),
                           repetitions=repetitions, train=train, compile=compile, threads=threads)
    if not options.tests() and not train:
        raise CogniError("nothing to measure: -p 0 and -n 0 skip pp and tg; give a length or --train")
    if threads is not None:
        torch.set_num_threads(threads)
    target = pick_device(device)
    bench_model = load_bench_model(run, profile, target, inference_dtype(dtype, target), options.context_needed,
                                   weight_format=weights)

    with make_progress(stderr(), transient=True) as progress:
        task = progress.add_task(f"bench {bench_model.name}", total=total_runs(options))
        report = run_bench(bench_model, options, dtype,
                           on_run=lambda test: progress.update(task, advance=1, description=f"bench {test}"))

    if as_json:
        stdout().print(json.dumps(report.to_dict()), highlight=False, markup=False, soft_wrap=True)
    elif as_csv:
        _print_csv(report)
    else:
        _print_table(report)


def _print_table(report) -> None:
    from rich import box
    from rich.table import Table

    from cognimamba.system.console import human_bytes, human_count

    # Markdown borders, as llama-bench prints: the table pastes straight into a README or an issue.
    weights = "random weights of the profile" if report.weights == "random" else "trained weights"
    table = Table(box=box.MARKDOWN, title=f"cogni bench, {weights}, on {report.device_name}", title_justify="left")
    for column in ("model", "params", "device", "dtype", "threads", "test", "batch", "t/s"):
        table.add_column(column, justify="left" if column in ("model", "test") else "right", no_wrap=True)
    for result in report.results:
        table.add_row(report.model, human_count(report.parameters), report.device, result.dtype, str(report.threads),
                      result.test, str(result.batch), f"{result.mean:.2f} ± {result.std:.2f}")
    console = stdout()
    if not console.is_terminal:  # piped into a file: keep rows whole rather than fit 80 columns
        console.width = max(console.width, 160)
    console.print(table)
    for note in report.notes:
        console.print(note, highlight=False)
    for result in report.results:
        if result.mfu is not None and report.peak_flops:
            memory = human_bytes(result.peak_memory_bytes) if result.peak_memory_bytes else "unknown"
            steps = (f"{result.grad_accum} micro-batches of {result.batch}" if result.grad_accum > 1
                     else f"batch {result.batch}")
            compiled = ", torch.compile" if result.compiled else ""
            console.print(f"{result.test} ({steps}, forward + backward, then fused AdamW{compiled}): MFU "
                           f"{100 * result.mfu:.1f}% of this device's measured {result.dtype} matmul peak of "
                           f"{report.peak_flops / 1e9:,.1f} GFLOP/s; {report.memory_kind}: {memory}; first step "
                           f"(warm-up) {result.warmup_seconds:.2f}s", highlight=False)


def _print_csv(report) -> None:
    import csv
    import sys

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["model", "params", "device", "dtype", "threads", "test", "n_prompt", "n_gen", "batch",
                     "mean_tokens_per_s", "std_tokens_per_s", "samples", "mfu", "peak_flops", "peak_memory_bytes",
                     "grad_accum"])
    for result in report.results:
        training = result.mfu is not None
        writer.writerow([report.model, report.parameters, report.device, result.dtype, report.threads, result.test,
                         result.n_prompt, result.n_gen, result.batch, f"{result.mean:.3f}", f"{result.std:.3f}",
                         ";".join(f"{sample:.3f}" for sample in result.samples),
                         f"{result.mfu:.4f}" if training else "", f"{report.peak_flops:.0f}" if training else "",
                         result.peak_memory_bytes if training and result.peak_memory_bytes else "",
                         result.grad_accum if training else ""])
