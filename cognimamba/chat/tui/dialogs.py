"""Modal screens: help, system prompt editor, generation settings, a one-line question, a confirmation."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from cognimamba.chat.session import SETTING_FIELDS, settings_with
from cognimamba.chat.tools import ToolBox
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError

SETTING_LABELS = {
    "temperature": "temperature (0 = greedy)",
    "top_k": "top-k (0 = off)",
    "top_p": "top-p (1 = off)",
    "max_new_tokens": "max new tokens",
    "repetition_penalty": "repetition penalty (1 = off)",
    "seed": "seed (-1 = random)",
}


class HelpScreen(ModalScreen[None]):
    """The key bindings, built from the same list the app binds, so it cannot drift."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, description in self.keys:
            table.add_row(key, description)
        with Vertical(classes="dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll():
                yield Static(table)
            yield Label("Ctrl+P opens the command palette with every action. Esc or F1 closes this.",
                        classes="dialog-hint")


class ToolsScreen(ModalScreen[None]):
    """The tools the model can be told about: built-ins (run when enabled) and --tools definitions (never run)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,f9,q", "dismiss(None)", "Close")]

    def __init__(self, tools: ToolBox) -> None:
        super().__init__()
        self.tools = tools

    def compose(self) -> ComposeResult:
        state = "on" if self.tools.enabled else "off (Ctrl+T turns it on)"
        with Vertical(classes="dialog"):
            yield Label(f"Tools · execution {state}", classes="dialog-title")
            with VerticalScroll():
                for tool in [*self.tools.builtins.values(), *self.tools.user_tools]:
                    function = tool.definition["function"]
                    if tool.run is None:
                        kind = "from --tools: shown to the model, never executed"
                    else:
                        kind = "built in: " + ("runs when called" if self.tools.enabled else "off")
                    yield Static(f"{tool.name} — {kind}", markup=False, classes="tool-name")
                    if function.get("description"):
                        yield Static(str(function["description"]), markup=False)
                    yield Static(json.dumps(tool.parameters, indent=2, ensure_ascii=False), markup=False,
                                 classes="tool-parameters")
            yield Label("Esc closes", classes="dialog-hint")


class SystemPromptScreen(ModalScreen[str | None]):
    """Edit the chat's system prompt; Ctrl+S saves, Esc cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel"),
                                             Binding("ctrl+s", "save", "Save")]

    def __init__(self, system_prompt: str) -> None:
        super().__init__()
        self.system_prompt = system_prompt

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("System prompt for this chat", classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield TextArea(self.system_prompt, id="system-prompt", soft_wrap=True)
                yield Label("Ctrl+S saves · Esc cancels · empty means no system turn", classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#system-prompt", TextArea).focus()

    def action_save(self) -> None:
        self.dismiss(self.query_one("#system-prompt", TextArea).text.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)


class SettingsScreen(ModalScreen[GenerationConfig | None]):
    """Temperature, top-k, top-p, max tokens, repetition penalty and seed of this chat, checked like the config."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel"),
                                             Binding("ctrl+s", "save", "Save")]

    def __init__(self, settings: GenerationConfig) -> None:
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        values = dataclasses.asdict(self.settings)
        with Vertical(classes="dialog"):
            yield Label("Generation settings for this chat", classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                for name in SETTING_FIELDS:
                    with Horizontal(classes="setting-row"):
                        yield Label(SETTING_LABELS[name], classes="setting-label")
                        yield Input(str(values[name]), id=f"setting-{name}", classes="setting-input", compact=True)
                yield Label("", id="settings-error", classes="error")
                yield Label("Enter or Ctrl+S saves · Esc cancels · applies to this chat", classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def action_save(self) -> None:
        changes = {name: self.query_one(f"#setting-{name}", Input).value for name in SETTING_FIELDS}
        try:
            settings = settings_with(self.settings, changes, "settings")
        except CogniError as error:
            self.query_one("#settings-error", Label).update(str(error).replace("settings: generation.", ""))
            return
        self.dismiss(settings)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)


class AskScreen(ModalScreen[str | None]):
    """One line of text (a chat's new title, a file to export to); Enter accepts, Esc cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__()
        self.question, self.value = question, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small"):
            yield Label(self.question, classes="dialog-title")
            yield Input(self.value, id="answer")
            yield Label("Enter accepts · Esc cancels", classes="dialog-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no for something that cannot be undone (delete, clear)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,n", "dismiss(False)", "No"),
                                             Binding("y", "dismiss(True)", "Yes")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small"):
            yield Label(self.question, classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
