"""The token inspector: a finished reply token by token, with the probability the model gave each token and its
likeliest alternatives, and the prompt exactly as the model saw it. For people who train their own models:
where a reply went wrong is usually one unlikely token, and the prompt shows what the model was really given."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static, TabbedContent, TabPane

from cognimamba.inference.decode_step import TokenChoice
from cognimamba.model.tokenizer import unmark


@dataclass
class Inspection:
    """What the inspector shows of one reply: its prompt and tokens (empty for replies from earlier sessions)."""

    prompt: str = ""
    choices: list[TokenChoice] = field(default_factory=list)


def probability_style(probability: float) -> str:
    """Green for tokens the model was sure of, yellow for hesitant ones, red for surprises."""
    if probability >= 0.5:
        return "green"
    return "yellow" if probability >= 0.1 else "red"


def shown_token(token: str) -> str:
    """A token readable in a table cell: whitespace made visible."""
    return repr(token)[1:-1] if token.strip() != token or not token else token


def remaining_probability(choice: TokenChoice) -> float:
    """The probability of every token outside the listed alternatives."""
    return max(0.0, 1.0 - sum(probability for _, probability in choice.alternatives))


class InspectorScreen(ModalScreen[None]):
    """Tokens and alternatives in a table, the prompt in a second tab."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "dismiss(None)", "Close")]

    def __init__(self, inspection: Inspection) -> None:
        super().__init__()
        self.inspection = inspection

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog inspector"):
            yield Label("Token inspector", classes="dialog-title")
            with TabbedContent():
                with TabPane("Tokens", id="tokens-tab"):
                    if self.inspection.choices:
                        yield DataTable(id="tokens", cursor_type="row", zebra_stripes=True)
                    else:
                        yield Static("Token probabilities are recorded for replies generated in this session "
                                     "by a local run; this one has none.", classes="dialog-hint")
                with TabPane("Prompt", id="prompt-tab"):
                    yield Static(unmark(self.inspection.prompt) or "(not recorded for this reply)", markup=False,
                                 id="prompt-text")
            yield Label("probability before temperature/top-k/top-p · rest = all other tokens · Esc closes",
                        classes="dialog-hint")

    def on_mount(self) -> None:
        if not self.inspection.choices:
            return
        table = self.query_one("#tokens", DataTable)
        width = max(len(choice.alternatives) for choice in self.inspection.choices)
        table.add_columns("#", "token", "p", *[f"alt {i + 1}" for i in range(width)], "rest")
        for index, choice in enumerate(self.inspection.choices):
            style = probability_style(choice.probability)
            alternatives = [Text(f"{shown_token(token)} {probability:.2f}", style=probability_style(probability))
                            for token, probability in choice.alternatives]
            alternatives += [Text("")] * (width - len(alternatives))
            table.add_row(str(index + 1), Text(shown_token(choice.token), style=style),
                          Text(f"{choice.probability:.3f}", style=style), *alternatives,
                          f"{remaining_probability(choice):.3f}")
        table.focus()
