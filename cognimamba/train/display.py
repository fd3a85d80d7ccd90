"""The live training view (Rich): a progress bar, the numbers that matter, and a loss sparkline."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cognimamba.config.schema import Config
from cognimamba.model.transformer import num_parameters
from cognimamba.runs.lora import base_transformer
from cognimamba.system.console import human_bytes, human_count
from cognimamba.system.hardware import cpu_has_native_bf16

SPARK_CHARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 48) -> str:
    values = [v for v in values if math.isfinite(v)][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(SPARK_CHARS[min(len(SPARK_CHARS) - 1, int((v - low) / span * len(SPARK_CHARS)))] for v in values)


def training_header(config: Config, device: torch.device, compute_dtype: torch.dtype, model: torch.nn.Module,
                    world_size: int, max_time: float | None, run: Path, compile_problem: str | None,
                    notes: list[str] | None = None) -> str:
    """What is about to train, where, and how fast it could; printed once above the live view."""
    total_params, non_embedding = num_parameters(base_transformer(model))  # counts LoRA matrices too
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    step_tokens = config.train.micro_batch_size * config.model.max_seq_len * config.train.grad_accum_steps * world_size
    budget = f"{max_time:.0f}s" if max_time else f"{config.train.max_steps} steps"
    dtype_name = str(compute_dtype).replace("torch.", "")
    header = (f"[bold]cogni train[/] {config.profile} profile on {device.type} ({dtype_name}): "
              f"{human_count(total_params)} parameters ({human_count(non_embedding)} non-embedding, "
              f"{human_count(trainable)} trainable), {human_count(step_tokens)} tokens/step, {budget} -> {run}")
    for note in notes or []:  # fine-tuning defaults, chat window fit, validation off
        header += f"\n{note}"
    if compile_problem:
        header += f"\n[yellow]train.compile: {compile_problem}; training runs eagerly[/]"
    elif config.train.compile:
        header += "\n[dim]torch.compile: the first step compiles the model (about a minute)[/]"
    if device.type == "cpu" and compute_dtype == torch.float32 and cpu_has_native_bf16():
        header += "\n[dim]this CPU has native bf16: --set train.precision=bf16 usually trains faster[/]"
    return header


@dataclass
class TrainingStats:
    step: int = 0
    total_steps: int = 0
    train_loss: float = float("nan")
    val_loss: float | None = None
    val_bits_per_byte: float | None = None
    lr: float = 0.0
    tokens_per_second: float = 0.0
    mfu: float | None = None
    memory_bytes: int | None = None
    elapsed: float = 0.0
    tokens_seen: int = 0
    phase: str = ""  # model.arch = fixed_point: which of its two phases, and phase 1's convergence
    loss_history: deque = field(default_factory=lambda: deque(maxlen=200))


class TrainingDisplay:
    """Live view on a terminal; plain log lines when output is piped (CI, log files)."""

    def __init__(self, console: Console, header: str, total: float, by_time: bool, enabled: bool = True) -> None:
        self.console = console
        self.header = header
        self.enabled = enabled
        self.by_time = by_time
        self.progress = Progress(TextColumn("[bold]training"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[label]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("train", total=total, label="")
        self.live: Live | None = None

    def __enter__(self) -> TrainingDisplay:
        if self.enabled:
            self.console.print(self.header)
            if self.console.is_terminal:
                self.live = Live(self._render(TrainingStats()), console=self.console, refresh_per_second=4,
                                 transient=False)
                self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def _render(self, stats: TrainingStats) -> Group:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim")
        table.add_column()
        table.add_column(style="dim")
        table.add_column()
        val = "-" if stats.val_loss is None else f"{stats.val_loss:.4f}"
        if stats.val_bits_per_byte:
            val += f" ({stats.val_bits_per_byte:.3f} bits/byte)"
        table.add_row("train loss", f"{stats.train_loss:.4f}", "val loss", val)
        table.add_row("lr", f"{stats.lr:.2e}", "tokens/s", human_count(stats.tokens_per_second))
        table.add_row("MFU", "-" if stats.mfu is None else f"{100 * stats.mfu:.1f}%",
                      "memory", "-" if stats.memory_bytes is None else human_bytes(stats.memory_bytes))
        table.add_row("tokens", human_count(stats.tokens_seen), "loss", sparkline(list(stats.loss_history)))
        if stats.phase:
            table.add_row("phase", stats.phase)
        return Group(self.progress, table)

    def update(self, stats: TrainingStats) -> None:
        if not self.enabled:
            return
        completed = stats.elapsed if self.by_time else stats.step
        label = f"step {stats.step}" + ("" if self.by_time else f"/{stats.total_steps}")
        self.progress.update(self.task, completed=completed, label=label)
        if self.live is not None:
            self.live.update(self._render(stats))

    def log(self, stats: TrainingStats) -> None:
        """One line per log interval when there is no live view."""
        if self.enabled and self.live is None:
            total = "" if self.by_time else f"/{stats.total_steps}"
            self.console.print(f"step {stats.step}{total}  loss {stats.train_loss:.4f}  lr {stats.lr:.2e}  "
                               f"{human_count(stats.tokens_per_second)} tok/s  {stats.elapsed:.0f}s"
                               + (f"  phase {stats.phase}" if stats.phase else ""), highlight=False)

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)
