"""`cogni eval RUN --tasks ... --bfcl ...`: lm-evaluation-harness tasks on the run dir itself, and BFCL's
tool-calling categories through its own harness against the run served in-process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cognimamba.cli.commands.common import JsonOption, stderr, stdout

INSTALL_HINT = "cogni eval needs lm-evaluation-harness: pip install 'cognimamba[eval]'"


def eval_command(
    run: Annotated[Path, typer.Argument(help="run dir (a LoRA run is evaluated merged)")],
    tasks: Annotated[str | None, typer.Option("--tasks", help="comma-separated lm-eval tasks or groups, e.g. hellaswag,arc_easy,lambada_openai")] = None,
    bfcl: Annotated[str | None, typer.Option("--bfcl", help="comma-separated BFCL categories or groups, e.g. simple_python,multiple,parallel,irrelevance,live_simple (needs bfcl-eval: see README)")] = None,
    num_fewshot: Annotated[int | None, typer.Option("--num-fewshot", min=0, help="examples in each prompt (default: each task's own)")] = None,
    limit: Annotated[float | None, typer.Option("--limit", min=0, help="documents per task (BFCL: cases per category); below 1, a fraction of them")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="sequences per forward for log likelihoods, and generations decoded at once (BFCL: requests at once)")] = 16,
    include_path: Annotated[Path | None, typer.Option("--include-path", help="directory of your own task YAML files (e.g. over local data)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")] = "auto",
    apply_chat_template: Annotated[bool, typer.Option("--apply-chat-template", help="wrap prompts in the ChatML template (chat fine-tunes)")] = False,
    as_json: JsonOption = False,
    out: Annotated[Path | None, typer.Option("--out", help="also write the results to this JSON file")] = None,
) -> None:
    """Score the run on lm-eval tasks (HellaSwag, ARC, PIQA, LAMBADA, your own text, ...) and BFCL's
    tool-calling categories; results kept in RUN/eval/."""
    from cognimamba.errors import CogniError
    from cognimamba.evaluation.bfcl_results import bfcl_scores
    from cognimamba.evaluation.harness_results import metric_values

    names = [name.strip() for name in (tasks or "").split(",") if name.strip()]
    categories = [name.strip() for name in (bfcl or "").split(",") if name.strip()]
    if not names and not categories:
        raise CogniError("give --tasks (lm-eval tasks, e.g. --tasks arc_easy) or --bfcl (BFCL categories, e.g. "
                         "--bfcl simple_python,irrelevance), or both")
    if categories:
        from cognimamba.evaluation.bfcl import check_harness_installed

        check_harness_installed()  # one clear line before anything loads
    payload: dict[str, Any] = {}  # what --json prints: each task's metrics, and BFCL's under "bfcl"
    saved: dict[str, dict[str, Any]] = {}  # what --out copies: the saved summaries
    if names:
        saved["lm_eval"] = lm_eval_results(run, names, num_fewshot, limit, batch_size, include_path, device,
                                           apply_chat_template, as_json)
        payload.update(metric_values(saved["lm_eval"]))
    if categories:
        saved["bfcl"] = bfcl_results(run, categories, limit, batch_size, device, as_json)
        payload["bfcl"] = bfcl_scores(saved["bfcl"])
    from cognimamba.evaluation.report import REPORT_FILE, write_report_safely

    if (run / REPORT_FILE).is_file():  # the run's report card shows its evaluations: keep it current
        write_report_safely(run, stderr())
    if out is not None:
        from cognimamba.system.fileio import atomic_write_json

        atomic_write_json(out, saved if len(saved) > 1 else next(iter(saved.values())))
    if as_json:
        stdout().print(json.dumps(payload), highlight=False, markup=False, soft_wrap=True)


def lm_eval_results(run: Path, names: list[str], num_fewshot: int | None, limit: float | None, batch_size: int,
                    include_path: Path | None, device: str, apply_chat_template: bool,
                    as_json: bool) -> dict[str, Any]:
    """lm-eval's tasks on the run: the table printed (unless --json); returns the summary it saved."""
    import importlib.util

    from cognimamba.errors import CogniError

    if importlib.util.find_spec("lm_eval") is None:
        raise CogniError(INSTALL_HINT)
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's own bars; ours is the Rich one below
    from cognimamba.evaluation.harness import HarnessOptions, evaluate_run
    from cognimamba.evaluation.harness_results import results_table, save_results
    from cognimamba.runs.loading import load_run
    from cognimamba.system.console import make_progress
    from cognimamba.system.hardware import pick_device

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
    if not as_json:
        console = stdout()
        if not console.is_terminal:  # piped into a file: keep rows whole rather than fit 80 columns
            console.width = max(console.width, 160)
        console.print(results_table(summary, f"cogni eval {run}"))
        stderr().print(f"saved {saved}", highlight=False, soft_wrap=True)
    return summary


def bfcl_results(run: Path, categories: list[str], limit: float | None, batch_size: int, device: str,
                 as_json: bool) -> dict[str, Any]:
    """BFCL's harness against the run served on a free loopback port, with a key made for this run only; the table
    printed (unless --json); returns the summary it saved."""
    import logging
    import secrets

    os.environ.setdefault("TQDM_DISABLE", "1")  # BFCL's own bars; ours is the Rich one below
    from cognimamba.evaluation.bfcl import BfclOptions, run_bfcl
    from cognimamba.evaluation.bfcl_results import bfcl_table, new_bfcl_stem, save_bfcl
    from cognimamba.evaluation.harness_results import EVAL_DIR
    from cognimamba.serve.engine import load_served_model
    from cognimamba.serve.local_server import serving_locally
    from cognimamba.serve.state import ServerSettings
    from cognimamba.system.console import make_progress

    # The server's warnings (a call to a tool the case never offered went back as text) are BFCL's to score.
    logging.getLogger("cognimamba.serve").setLevel(logging.ERROR)
    model = load_served_model(run, device, parallel=batch_size)
    run_dir = run.resolve()
    stem = new_bfcl_stem(run_dir)
    key = secrets.token_urlsafe(24)
    options = BfclOptions(categories=categories, limit=limit, threads=batch_size)
    started = time.perf_counter()
    settings = ServerSettings(api_key=key, max_concurrency=max(batch_size, 16))
    with serving_locally(model, settings) as url, make_progress(stderr(), transient=True) as progress:
        task = progress.add_task("BFCL", total=None)
        summary = run_bfcl(url, key, model.name, options, run_dir / EVAL_DIR / stem,
                           on_start=lambda total: progress.update(task, total=total),
                           on_case=lambda: progress.advance(task))
    summary["settings"].update(device=device, wall_seconds=round(time.perf_counter() - started, 2))
    saved = save_bfcl(run_dir, stem, summary)
    if not as_json:
        console = stdout()
        if not console.is_terminal:  # piped into a file: keep rows whole rather than fit 80 columns
            console.width = max(console.width, 160)
        console.print(bfcl_table(summary, f"cogni eval {run} --bfcl: {summary['cases']} cases in "
                                          f"{summary['settings']['generation_seconds']:.1f} s "
                                          f"({summary['seconds_per_case'] or 0:.3f} s/case, {batch_size} at once)"))
        if summary["refused_for_context"]:
            stderr().print(f"{summary['refused_for_context']} cases were refused: their prompt does not fit the "
                           "model's context (BFCL scores a refused irrelevance case as correct; 'Refused as "
                           "wrong' does not)", highlight=False, soft_wrap=True)
        stderr().print(f"saved {saved}", highlight=False, soft_wrap=True)
    return summary
