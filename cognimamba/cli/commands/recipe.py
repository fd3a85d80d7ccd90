"""`cogni recipe chat`: from nothing to a tool-calling assistant in one resumable command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import ProfileOption, stderr

recipe_app = typer.Typer(help="Whole pipelines in one resumable command; recipes are TOML files you can copy.",
                         no_args_is_help=True)


@recipe_app.command("chat")
def chat_recipe_command(
    profile: ProfileOption = None,
    recipe: Annotated[Path | None, typer.Option("--recipe", help="a recipe TOML (default: the profile's built-in "
                                                                "one; --dry-run shows its path)")] = None,
    pretrain: Annotated[list[str] | None, typer.Option("--pretrain", help="pretraining text: a name `cogni prepare` "
                                                                          "knows or a file (repeatable)")] = None,
    chat: Annotated[list[str] | None, typer.Option("--chat", help="chat data: SOURCE[:FORMAT]\\[@WEIGHT], e.g. "
                                                                  "data.json:sharegpt@0.5 (repeatable)")] = None,
    budget: Annotated[str | None, typer.Option("--budget", help="wall clock for the whole recipe, e.g. 20m or 2h")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="where the runs go (default: runs/recipe-chat-PROFILE); "
                                                           "OUT/chat is the chat model")] = None,
    chat_eval: Annotated[str | None, typer.Option("--chat-eval", help="held-out conversations FILE[:FORMAT] "
                                                                      "(default: held-out synthetic ones)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved plan and stop")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no live training progress")] = False,
) -> None:
    """Tokenizer on all the text, pretraining, chat fine-tuning on the weighted mix, and a chat eval.

    Run the same command again after an interrupt: finished stages are skipped, a stopped one resumes."""
    from cognimamba.recipes.plan import resolve_plan

    plan = resolve_plan(profile, recipe, out, pretrain, chat, budget, chat_eval)
    console = stderr()
    if dry_run:
        from cognimamba.recipes.state import RecipeState

        state = RecipeState.open(plan.out, plan.identity())
        for line in plan.describe():
            console.print(line, highlight=False, soft_wrap=True)
        console.print(f"stages done: {', '.join(state.done) or 'none'}", highlight=False)
        return
    from cognimamba.recipes.chat_recipe import run_chat_recipe

    run_chat_recipe(plan, console, show_progress=not quiet)
