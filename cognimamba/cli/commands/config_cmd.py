"""`cogni config` and `cogni profiles`: see what a profile resolves to and what it costs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import ConfigFileOption, ProfileOption, SetOption, stderr, stdout


def config_command(
    profile: ProfileOption = None,
    config_file: ConfigFileOption = None,
    overrides: SetOption = None,
    write: Annotated[Path | None, typer.Option("--write", help="save the resolved config as TOML here")] = None,
) -> None:
    """Print the resolved config (profile + file + --set) as TOML."""
    from cognimamba.config.overrides import resolve_config, to_toml
    from cognimamba.system.fileio import atomic_write_text

    config = resolve_config(profile, config_file, list(overrides or []))
    text = to_toml(config)
    if write is not None:
        atomic_write_text(write, text)
        stderr().print(f"wrote {write}")
    else:
        stdout().print(text, highlight=False, markup=False, soft_wrap=True)


def profiles_command() -> None:
    """Compare the hardware profiles: size, tokens per step and estimated peak training memory."""
    from rich.table import Table

    from cognimamba.config.profiles import (
        BUDGET_GIB,
        GIB,
        PROFILES,
        estimate_memory,
        get_profile,
        parameter_counts,
        tokens_per_step,
    )
    from cognimamba.system.console import human_bytes, human_count

    table = Table(title="Hardware profiles: size and estimated peak training memory", title_justify="left")
    for column in ("profile", "params (non-emb)", "layers×dim", "seq×batch×accum", "tokens/step",
                   "weights+grads+AdamW", "activations", "logits", "peak / budget"):
        table.add_column(column, justify="right", overflow="fold")
    for name in PROFILES:
        config = get_profile(name)
        total, non_embedding = parameter_counts(config.model)
        estimate = estimate_memory(config)
        train = config.train
        if train.grad_checkpointing:
            acts = f"{human_bytes(estimate.activations_checkpointed)} ckpt ({human_bytes(estimate.activations)} off)"
        else:
            acts = f"{human_bytes(estimate.activations)} ({human_bytes(estimate.activations_checkpointed)} ckpt)"
        budget = BUDGET_GIB.get(name)
        if budget is None:
            peak = f"{human_bytes(estimate.total)} / RAM"
        else:
            verdict = "[green]fits[/]" if estimate.total <= budget * GIB else "[red]over[/]"
            peak = f"{human_bytes(estimate.total)} / {budget:.0f} GiB {verdict}"
        table.add_row(name, f"{human_count(total)} ({human_count(non_embedding)})",
                      f"{config.model.n_layers}×{config.model.dim}",
                      f"{config.model.max_seq_len}×{train.micro_batch_size}×{train.grad_accum_steps}",
                      human_count(tokens_per_step(config)),
                      human_bytes(estimate.weights + estimate.gradients + estimate.optimizer), acts,
                      human_bytes(estimate.logits), peak)
    stdout().print(table)
