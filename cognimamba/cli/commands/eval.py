"""`cogni eval RUN --tasks ...`: standard benchmarks through lm-evaluation-harness, on the run dir itself."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import JsonOption, stderr, stdout

INSTALL_HINT = "cogni eval needs lm-evaluation-harness: pip install 'cognimamba[eval]'"


def eval_command(
    run: Annotated[Path, typer.Argument(help="run dir (a LoRA run is evaluated merged)")],
    tasks: Annotated[str, typer.Option("--tasks", help="comma-separated lm-eval tasks or groups, e.g. hellaswag,arc_easy,lambada_openai")],
    num_fewshot: Annotated[int | None, typer.Option("--num-fewshot", min=0, help="examples in each prompt (default: each task's own)")] = None,
    limit: Annotated[float | None, typer.Option("--limit", min=0, help="documents per task; below 1, a fraction of them")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="sequences per forward for log likelihoods, and generations decoded at once")] = 16,
    include_path: Annotated[Path | None, typer.Option("--include-path", help="directory of your own task YAML files (e.g. over local data)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")] = "auto",
    apply_chat_template: Annotated[bool, typer.Option("--apply-chat-template", help="wrap prompts in the ChatML template (chat fine-tunes)")] = False,
    as_json: JsonOption = False,
    out: Annotated[Path | None, typer.Option("--out", help="also write the results to this JSON file")] = None,
) -> None:
    """Score the run on lm-eval tasks (HellaSwag, ARC, PIQA, LAMBADA, your own text, ...); results kept in RUN/eval/."""
    import importlib.util

    from cognimamba.errors import CogniError

    if importlib.util.find_spec("lm_eval") is None:
        raise CogniError(INSTALL_HINT)
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's own bars; ours is the Rich one below
    from cognimamba.evaluation.harness import HarnessOptions, evaluate_run
    from cognimamba.evaluation.harness_results import save_results
    from cognimamba.runs.loading import load_run
    from cognimamba.system.console import make_progress
    from cognimamba.system.fileio import atomic_write_json
    from cognimamba.system.hardware import pick_device

    names = [name.strip() for name in tasks.split(",") if name.strip()]
    if not names:
        raise CogniError("--tasks: give at least one task name, e.g. --tasks arc_easy")
    whole_limit = limit is not None and limit >= 1
    options = HarnessOptions(tasks=names, num_fewshot=num_fewshot, batch_size=batch_size, include_path=include_path,
                             limit=int(limit) if whole_limit and limit is not None else limit,
                             apply_chat_template=apply_chat_template)
    target = pick_device(device)
    loaded = load_run(run, device=target)
    started = time.perf_counter()
    with make_progress(stderr(), transient=True) as progress:
        summary = evaluate_run(loaded, target, options, progress)
    summary["settings"].update(device=str(target), wall_seconds=round(time.perf_counter() - started, 2))
    saved = save_results(loaded.path, summary)
    if out is not None:
        atomic_write_json(out, summary)
    if as_json:
        from cognimamba.evaluation.harness_results import metric_values

        stdout().print(json.dumps(metric_values(summary)), highlight=False, markup=False, soft_wrap=True)
    else:
        from cognimamba.evaluation.harness_results import results_table

        console = stdout()
        if not console.is_terminal:  # piped into a file: keep rows whole rather than fit 80 columns
            console.width = max(console.width, 160)
        console.print(results_table(summary, f"cogni eval {run}"))
        stderr().print(f"saved {saved}", highlight=False, soft_wrap=True)

