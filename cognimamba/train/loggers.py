"""Where training's rows go: metrics.jsonl always, TensorBoard or Weights & Biases when asked; rank 0 only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cognimamba.config.schema import Config
from cognimamba.errors import CogniError
from cognimamba.runs.metrics import append_metrics

Row = dict[str, Any]


class MetricsLog:
    """One `write(row)` for every sink; silent on ranks other than 0."""

    def __init__(self, run: Path, sink: Callable[[Row], None] | None, enabled: bool) -> None:
        self.run = run
        self.sink = sink
        self.enabled = enabled

    def write(self, row: Row) -> None:
        if not self.enabled:
            return
        append_metrics(self.run, row)
        if self.sink is not None:
            self.sink(row)


def open_metrics_log(kind: str, run: Path, config: Config, enabled: bool) -> MetricsLog:
    sink = None
    if enabled and kind == "tensorboard":
        sink = tensorboard_sink(run)
    elif enabled and kind == "wandb":
        sink = wandb_sink(run, config)
    return MetricsLog(run, sink, enabled)


def tensorboard_sink(run: Path) -> Callable[[Row], None]:
    try:  # optional dependency, imported only when asked for
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (optional: cognimamba[tensorboard])
    except ImportError as error:
        raise CogniError("--logger tensorboard needs the tensorboard package: pip install tensorboard") from error
    writer = SummaryWriter(log_dir=str(run / "tensorboard"))

    def log_tensorboard(row: Row) -> None:
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float):
                writer.add_scalar(key, value, row["step"])
        writer.flush()

    return log_tensorboard


def wandb_sink(run: Path, config: Config) -> Callable[[Row], None]:
    try:  # optional dependency, imported only when asked for
        import wandb  # noqa: PLC0415 (optional: cognimamba[wandb])
    except ImportError as error:
        raise CogniError("--logger wandb needs the wandb package: pip install wandb") from error
    wandb_run = wandb.init(project="cognimamba", name=run.name, config=config.to_dict())

    def log_wandb(row: Row) -> None:
        wandb_run.log({key: value for key, value in row.items() if key != "step"}, step=row["step"])

    return log_wandb
