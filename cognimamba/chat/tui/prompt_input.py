"""The message box: a multi-line editor where Enter sends, Shift+Enter or Ctrl+J starts a new line, and Up/Down
on the first/last line recall earlier messages (as a shell does)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "ctrl+j")  # most terminals send Ctrl+J for Shift+Enter unless they speak kitty keys


class PromptInput(TextArea):
    """TextArea that submits on Enter instead of inserting a newline, with a recall list of sent messages."""

    @dataclass
    class Submitted(Message):
        prompt_input: PromptInput
        text: str

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         placeholder="Message (Enter sends · Shift+Enter or Ctrl+J for a new line · F1 help)",
                         **kwargs)  # type: ignore[arg-type]
        self.recall: list[str] = []  # sent messages, oldest first
        self._recall_at: int | None = None  # the recalled entry shown, None while typing a new one
        self._draft = ""  # what was being typed before Up began recalling

    def remember(self, text: str) -> None:
        if text and (not self.recall or self.recall[-1] != text):
            self.recall.append(text)
        self._recall_at = None

    def _recall(self, step: int) -> bool:
        """Show an earlier (step -1) or later (+1) sent message; False when there is none that way."""
        if not self.recall or (self._recall_at is None and step > 0):
            return False
        if self._recall_at is None:
            self._draft, at = self.text, len(self.recall) - 1
        else:
            at = self._recall_at + step
        if at < 0:
            return True  # at the oldest: stay there
        if at >= len(self.recall):
            self._recall_at = None
            self.load_text(self._draft)
        else:
            self._recall_at = at
            self.load_text(self.recall[at])
        self.move_cursor(self.document.end)
        return True

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self._replace_via_keyboard("\n", start, end)
            return
        row = self.cursor_location[0]
        at_edge = (event.key == "up" and row == 0) or (event.key == "down" and row == self.document.line_count - 1)
        if at_edge and self._recall(-1 if event.key == "up" else 1):
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)
