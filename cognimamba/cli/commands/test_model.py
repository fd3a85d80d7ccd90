"""`cogni test-model RUN`: check and evaluate a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import JsonOption, stdout


def test_model_command(
    run: Annotated[Path, typer.Argument(help="run dir")],
    data: Annotated[Path | None, typer.Option("--data", help="prepared data dir (default: the one it trained on)")] = None,
    eval_file: Annotated[Path | None, typer.Option("--eval-file", help="a .txt file to measure loss on")] = None,
    chat_data: Annotated[Path | None, typer.Option("--chat-data", help="chat data: assistant-token loss")] = None,
    tool_eval: Annotated[Path | None, typer.Option("--tool-eval", help="held-out tool conversations to score")] = None,
    chat_eval: Annotated[Path | None, typer.Option("--chat-eval", help="held-out conversations: turn-taking "
                                                   "and tool-call rates")] = None,
    tool_format: Annotated[str | None, typer.Option("--format", help="format of the --tool-eval / --chat-eval "
                                                    "FILE")] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify the run (weights, forward, gradients, KV cache) and report held-out loss, perplexity, bits/byte."""
    from rich.table import Table

    from cognimamba.evaluation.checks import test_model
    from cognimamba.evaluation.harness_results import latest_results, metric_values, results_table
    from cognimamba.runs.loading import load_run

    if chat_eval is not None and not chat_eval.is_file():  # one clear line before the model loads
        from cognimamba.errors import CogniError

        raise CogniError(f"{chat_eval}: chat-eval file not found (a JSON/JSONL file of held-out conversations)")
    loaded = load_run(run)
    report = test_model(loaded, data=data, eval_file=eval_file, chat_data=chat_data, tool_eval_file=tool_eval,
                        tool_format=tool_format)
    if chat_eval is not None:
        from cognimamba.evaluation.chat_eval import eval_chat_turns
        from cognimamba.evaluation.saved_evals import save_chat_eval

        result = eval_chat_turns(loaded, chat_eval, tool_format, report)
        save_chat_eval(loaded.path, result.metrics(), str(chat_eval), result.summary())  # for `cogni report`
    latest_eval = latest_results(loaded.path)  # what `cogni eval` last measured, if it ran
    if as_json:
        payload = {**report.metrics, "passed": report.passed,
                   "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in report.checks]}
        if latest_eval is not None:
            saved, summary = latest_eval
            payload["lm_eval"] = {"file": str(saved), "date": summary.get("date"), "results": metric_values(summary)}
        stdout().print(json.dumps(payload), highlight=False, markup=False, soft_wrap=True)
    else:
        table = Table(title=f"cogni test-model {run}")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        for check in report.checks:
            table.add_row(check.name, "[green]pass" if check.passed else "[red]FAIL", check.detail)
        stdout().print(table)
        if latest_eval is not None:
            saved, summary = latest_eval
            stdout().print(results_table(summary, f"latest cogni eval ({saved}, {summary.get('date', 'undated')})"))
    if not report.passed:
        raise typer.Exit(1)
