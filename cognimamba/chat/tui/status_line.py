"""One line under the input: model state, speed of the last reply, context use, tools, settings."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


class StatusLine(Static):
    state = reactive("loading model…")
    model = reactive("")
    speed = reactive("")  # of the last reply: "35.2 tok/s"
    context_used = reactive(0)
    context_length = reactive(0)
    tools_enabled = reactive(False)
    settings = reactive("")

    def render(self) -> Text:
        parts = [self.state]
        if self.speed:
            parts.append(self.speed)
        if self.context_length:
            share = 100 * self.context_used / self.context_length
            parts.append(f"context {self.context_used}/{self.context_length} ({share:.0f}%)")
        parts.append("tools on" if self.tools_enabled else "tools off")
        if self.model:
            parts.append(self.model)
        if self.settings:
            parts.append(self.settings)
        return Text(" · ".join(parts), no_wrap=True, overflow="ellipsis")
