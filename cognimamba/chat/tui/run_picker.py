"""Open another run from the app: the run dirs under a folder with their size and profile."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from cognimamba.runs.layout import RunSummary


def describe_run(summary: RunSummary, folder: Path) -> str:
    """'quickstart/best · 18.2 MB · cpu'"""
    try:
        name = str(summary.path.relative_to(folder))
    except ValueError:
        name = str(summary.path)
    return f"{name} · {summary.weights_bytes / 1e6:.1f} MB · {summary.profile}"


class RunPickerScreen(ModalScreen[Path | None]):
    """Enter opens the highlighted run; the chat stays, and goes on with the new model."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, folder: Path, runs: list[RunSummary], current: str = "") -> None:
        super().__init__()
        self.folder, self.runs, self.current = folder, runs, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Open a run from {self.folder}", classes="dialog-title")
            if self.runs:
                yield OptionList(*[Option(describe_run(summary, self.folder), id=str(index))
                                   for index, summary in enumerate(self.runs)], id="runs")
            else:
                yield Label("No run dirs here (a run dir holds config.json, tokenizer.json and the weights).")
            yield Label("Enter opens it and keeps this chat · Esc cancels", classes="dialog-hint")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.runs[int(event.option.id or 0)].path)
