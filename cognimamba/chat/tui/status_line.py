"""One line under the input: model state, speed, context use, tools, model and settings, cut to fit."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


def fit_parts(parts: list[str], width: int, separator: str = " · ") -> str:
    """As many whole parts as fit `width` (they come most important first), the last cut with an ellipsis."""
    shown: list[str] = []
    for part in parts:
        line = separator.join([*shown, part])
        if len(line) <= width:
            shown.append(part)
            continue
        room = width - len(separator.join(shown)) - (len(separator) if shown else 0)
        if room > 8:  # a cut part is only worth showing when a few words of it remain
            shown.append(part[:room - 1] + "…")
        break
    return separator.join(shown)


class StatusLine(Static):
    state = reactive("loading model…")
    model = reactive("")
    speed = reactive("")  # live while a reply streams, then of the last reply: "35.2 tok/s"
    context_used = reactive(0)
    context_length = reactive(0)
    tools_enabled = reactive(False)
    settings = reactive("")

    def parts(self) -> list[str]:
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
        return parts

    def render(self) -> Text:
        width = self.content_size.width or 200
        return Text(fit_parts(self.parts(), width), no_wrap=True, overflow="ellipsis")
