"""`cogni recipe chat`: tokenizer -> data -> pretraining -> chat fine-tuning -> chat eval, resumable.

Each finished stage is recorded in OUT/recipe.json; running the same command again skips those and resumes
a stopped training stage from its checkpoint, so an interrupt costs at most the steps since the last save.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from cognimamba.errors import CogniError
from cognimamba.recipes import stages
from cognimamba.recipes.plan import STAGE_TITLES, STAGES, RecipePlan
from cognimamba.recipes.report import write_recipe_report_safely
from cognimamba.recipes.state import RecipeState
from cognimamba.train.signals import TrainingInterrupted


def run_chat_recipe(plan: RecipePlan, console: Console, show_progress: bool = True) -> RecipeState:
    """Run the stages not yet done, then print the figures and the command to talk to the model."""
    state = RecipeState.open(plan.out, plan.identity())
    console.rule("[bold]cogni recipe chat")
    for line in plan.describe():
        console.print(f"  {line}", highlight=False)
    work: dict[str, Callable[[], dict[str, Any]]] = {
        "tokenizer": lambda: stages.make_tokenizer(plan, console),
        "data": lambda: stages.prepare_data(plan, console),
        "pretrain": lambda: stages.pretrain(plan, console, show_progress),
        "chat": lambda: stages.fine_tune(plan, console, show_progress),
        "eval": lambda: stages.evaluate(plan, console),
    }
    for number, stage in enumerate(STAGES, start=1):
        title = f"{number}/{len(STAGES)} {STAGE_TITLES[stage]}"
        if state.is_done(stage):
            console.print(f"{title}: done already, skipped", highlight=False)
            continue
        resuming = stage in ("pretrain", "chat") and stages.started(plan.out / ("base" if stage == "pretrain"
                                                                               else "chat"))
        console.print(f"[bold]{title}[/]{' (resuming from its checkpoint)' if resuming else ''}", highlight=False)
        try:
            started = time.perf_counter()
            figures = work[stage]()
            state.finish(stage, {**figures, "wall_seconds": round(time.perf_counter() - started, 1)})
        except TrainingInterrupted as stop:
            raise CogniError(f"{STAGE_TITLES[stage]} stopped with a checkpoint; run the same `cogni recipe chat` "
                             "command again to continue", exit_code=stop.exit_code) from stop
    console.print(figures_table(state))
    console.print(f"[green]done[/]: the chat model is {plan.out / 'chat'} (its base: {plan.out / 'base'})\n"
                  f"Talk to it:  cogni chat {plan.out / 'chat'} --enable-tools", highlight=False)
    write_recipe_report_safely(plan.out, console)
    return state


def _rate(figures: dict[str, Any], rate: str, count: str, total: str) -> str:
    value = figures.get(rate)
    return "n/a" if value is None else f"{value:.2f} ({figures.get(count, 0)}/{figures.get(total, 0)})"


def figures_table(state: RecipeState) -> Table:
    """One table: pretraining bits/byte, chat loss, and the chat-eval rates with their counts."""
    base, chat, evaluation = (state.figures.get(stage, {}) for stage in ("pretrain", "chat", "eval"))
    table = Table(title="cogni recipe chat", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    bits = base.get("val_bits_per_byte")
    table.add_row("pretraining val bits/byte", "n/a" if not bits else f"{bits:.3f}")
    chat_loss = chat.get("val_loss")
    table.add_row("chat val loss (assistant tokens)", "n/a" if chat_loss is None else f"{chat_loss:.3f}")
    table.add_row("turn-taking", _rate(evaluation, "turn_taking_rate", "turns_taken", "turns"))
    table.add_row("tool call parses", _rate(evaluation, "parse_rate", "parsed_calls", "tool_call_turns"))
    table.add_row("right tool", _rate(evaluation, "name_rate", "right_names", "tool_call_turns"))
    table.add_row("right arguments", _rate(evaluation, "args_rate", "right_args", "tool_call_turns"))
    table.add_row("no false call", _rate(evaluation, "no_false_call_rate", "no_false_calls", "plain_turns"))
    return table
