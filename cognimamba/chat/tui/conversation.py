"""The conversation pane: one widget per message, the assistant's reply streamed in as Markdown."""

from __future__ import annotations

import json
import re

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from cognimamba.chat.format import ToolCall
from cognimamba.chat.session import (
    ChatEvent,
    ContextTrimmed,
    Message,
    ReplyFinished,
    ReplyStarted,
    ToolRan,
    ToolSkipped,
    pretty_json,
)
from cognimamba.chat.tui.commands import welcome_text
from cognimamba.chat.tui.inspector import Inspection
from cognimamba.model.tokenizer import TOOL_CALL

CODE_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


def code_blocks(text: str) -> list[str]:
    """The fenced code blocks of a Markdown reply, without their fences."""
    return [block.rstrip("\n") for block in CODE_BLOCK.findall(text)]


def reply_footer(meta: dict) -> str:
    """'42 tokens · 120.5 tok/s · first token 0.03 s', plus why the reply ended early."""
    parts = [f"{meta.get('generated_tokens', 0)} tokens"]
    if meta.get("tokens_per_second"):
        parts.append(f"{meta['tokens_per_second']:.1f} tok/s")
    if meta.get("time_to_first_token"):
        parts.append(f"first token {meta['time_to_first_token']:.2f} s")
    reason = meta.get("stop_reason")
    notes = {"cancelled": "stopped (partial reply)", "max_new_tokens": "hit max tokens",
             "context": "hit the context limit"}
    if reason in notes:
        parts.append(notes[reason])
    return " · ".join(parts)


class UserMessage(Static):
    """What the user sent, shown as typed (no markup)."""

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False)
        self.border_title = "you"


class Welcome(Static):
    """What an empty chat says to a new user."""

    def __init__(self) -> None:
        super().__init__(welcome_text(), markup=False)


class SystemNote(Static):
    """The chat's system prompt, at the top of the transcript (F3 edits it)."""

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False)
        self.border_title = "system prompt (F3)"


class Notice(Static):
    """A line from the app itself: context trimmed, reply stopped, errors."""

    def __init__(self, text: str, kind: str = "info") -> None:
        super().__init__(text, markup=False, classes=kind)


class ToolCallBlock(Collapsible):
    """One tool call: name in the title, pretty-printed arguments, then the result once there is one."""

    def __init__(self, call: ToolCall) -> None:
        self.call = call
        self.arguments = Static(json.dumps(call.arguments, indent=2, ensure_ascii=False), markup=False,
                                classes="tool-arguments")
        self.result = Static("waiting for the result…", markup=False, classes="tool-result pending")
        super().__init__(self.arguments, self.result, title=f"tool call · {call.name}", collapsed=False)

    @property
    def has_result(self) -> bool:
        return not self.result.has_class("pending")

    def set_result(self, content: str, ok: bool) -> None:
        self.result.update(("result:\n" if ok else "error:\n") + pretty_json(content))
        self.result.set_classes("tool-result " + ("ok" if ok else "failed"))

    def set_not_run(self, reason: str) -> None:
        self.result.update(f"not run: {reason}")
        self.result.set_classes("tool-result skipped")


class MalformedToolCall(Vertical):
    """A tool call the model got wrong, shown raw with what is wrong, instead of crashing or hiding it."""

    def __init__(self, problem: str, raw: str) -> None:
        super().__init__(classes="malformed")
        self.problem, self.raw = problem, raw

    def compose(self) -> ComposeResult:
        yield Static(f"⚠ malformed tool call: {self.problem}", markup=False, classes="warning")
        yield Static(self.raw, markup=False, classes="raw")


class AssistantMessage(Vertical):
    """The model's reply: Markdown that grows as deltas arrive, then tool calls and a stats footer."""

    def __init__(self, content: str = "", message: Message | None = None) -> None:
        super().__init__()
        self.border_title = "assistant"
        self.message = message  # the session's message once finished: what copy, versions and edits act on
        self.inspection: Inspection | None = None  # tokens and prompt, for replies made in this session
        self.markdown = Markdown(content)
        self.footer = Static("", markup=False, classes="reply-footer")
        self.raw = ""
        self._shown = 0
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield self.markdown
        yield self.footer

    @property
    def visible_text(self) -> str:
        """The reply so far, up to where a tool call starts (the call gets its own block when complete)."""
        return self.raw.split(TOOL_CALL, 1)[0]

    async def append(self, delta: str) -> None:
        self.raw += delta
        visible = self.visible_text
        if len(visible) > self._shown:
            if self._stream is None:
                self._stream = Markdown.get_stream(self.markdown)
            await self._stream.write(visible[self._shown:])
            self._shown = len(visible)
        if TOOL_CALL in self.raw:
            self.footer.update("writing a tool call…")

    async def finish(self, message: Message) -> list[ToolCallBlock]:
        """Show the parsed reply (text, tool call blocks, malformed calls) and its stats."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if message.content != self.visible_text:
            await self.markdown.update(message.content)
        return await self.show_parts(message)

    async def show_version(self, message: Message) -> None:
        """Show the version of a regenerated reply the session now holds."""
        await self.remove_children(ToolCallBlock)
        await self.remove_children(MalformedToolCall)
        await self.markdown.update(message.content)
        self.show_version_title(message)

    def show_version_title(self, message: Message) -> None:
        versions = message.meta.get("versions") or []
        if len(versions) > 1:
            self.border_title = f"assistant · {message.meta.get('version', 0) + 1}/{len(versions)} (Alt+←/→)"
        else:
            self.border_title = "assistant"

    async def show_parts(self, message: Message) -> list[ToolCallBlock]:
        """Tool call blocks (with why a call was not run) and malformed calls, raw, with a warning."""
        blocks = [ToolCallBlock(call) for call in message.tool_calls]
        for block, reason in zip(blocks, message.meta.get("not_run") or [], strict=False):
            if reason is not None:
                block.set_not_run(reason)
        problems = message.meta.get("problems", [])
        raws = message.meta.get("raw_calls", [])
        malformed = [MalformedToolCall(problem, raw) for problem, raw in zip(problems, raws, strict=False)
                     if not problem.startswith("unknown tool")]  # an unknown tool still gets a block saying so
        await self.mount_all([*blocks, *malformed], before=self.footer)
        self.footer.update(reply_footer(message.meta))
        self.message = message
        self.show_version_title(message)
        return blocks


class Conversation(VerticalScroll):
    """The scrolling list of messages; stays pinned to the bottom while a reply streams."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.streaming: AssistantMessage | None = None  # the reply box text deltas go to
        self.selected: AssistantMessage | None = None  # chosen with Alt+↑/↓: what copy, inspect and versions act on

    def on_mount(self) -> None:
        self.anchor()

    async def append_to_reply(self, text: str) -> None:
        if text and self.streaming is not None:
            await self.streaming.append(text)

    async def show_event(self, event: ChatEvent) -> None:
        """A reply's event other than its text: context trimmed, a new reply box, the reply done, a tool's result."""
        if isinstance(event, ContextTrimmed):
            await self.mount(Notice(event.describe(), "warning"))
        elif isinstance(event, ReplyStarted):
            self.streaming = AssistantMessage()
            await self.mount(self.streaming)
        elif isinstance(event, ReplyFinished) and self.streaming is not None:
            self.streaming.inspection = Inspection(event.prompt, list(event.stats.token_choices))
            await self.streaming.finish(event.message)
        elif isinstance(event, ToolRan | ToolSkipped):
            block = self.pending_block(event.call.name)
            if block is not None and isinstance(event, ToolRan):
                block.set_result(event.result.content, event.result.ok)
            elif block is not None:
                block.set_not_run(event.reason)

    async def show_messages(self, messages: list[Message], system_prompt: str = "") -> None:
        """Rebuild the pane from saved messages (reopening a chat); an empty chat gets the welcome text."""
        await self.remove_children()
        replies: list[AssistantMessage] = []
        widgets: list[Static | AssistantMessage] = [SystemNote(system_prompt)] if system_prompt else []
        if not messages:
            widgets.append(Welcome())
        for message in messages:
            if message.role == "user":
                widgets.append(UserMessage(message.content))
            elif message.role == "assistant":
                replies.append(AssistantMessage(message.content))
                widgets.append(replies[-1])
        await self.mount_all(widgets)
        # Tool results follow their assistant message; each goes to the next call block without one.
        pending: list[ToolCallBlock] = []
        next_reply = iter(replies)
        for message in messages:
            if message.role == "assistant":
                pending = await next(next_reply).show_parts(message)
            elif message.role == "tool":
                block = next((block for block in pending if not block.has_result), None)
                if block is not None:
                    block.set_result(message.content, bool(message.meta.get("ok", True)))
        self.scroll_end(animate=False)

    async def show_system_prompt(self, text: str) -> None:
        await self.remove_children(SystemNote)
        if text:
            await self.mount(SystemNote(text), before=0 if self.children else None)

    def finished_replies(self) -> list[AssistantMessage]:
        return [reply for reply in self.query(AssistantMessage) if reply.message is not None]

    def target_reply(self) -> AssistantMessage | None:
        """The reply chosen with Alt+↑/↓, or the last finished one."""
        if self.selected is not None and self.selected.is_attached:
            return self.selected
        finished = self.finished_replies()
        return finished[-1] if finished else None

    def select_reply(self, step: int) -> None:
        """Move the selection `step` finished replies up (-1) or down (1), from the last one when none is chosen."""
        replies = self.finished_replies()
        if not replies:
            return
        current = self.target_reply()
        index = replies.index(current) if current in replies else len(replies)
        self.selected = replies[max(0, min(len(replies) - 1, index + step))]
        for reply in replies:
            reply.set_class(reply is self.selected, "selected")
        self.selected.scroll_visible()

    def remove_last_turn(self, keep_user_message: bool) -> None:
        """Take the widgets of the last turn away: from the last user message, or from just after it."""
        widgets = list(self.children)
        users = [i for i, widget in enumerate(widgets) if isinstance(widget, UserMessage)]
        start = users[-1] + (1 if keep_user_message else 0) if users else len(widgets)
        for widget in widgets[start:]:
            widget.remove()
        self.selected = None

    def pending_block(self, name: str) -> ToolCallBlock | None:
        """The first call block for `name` still waiting for its result (results arrive in call order)."""
        for block in self.query(ToolCallBlock):
            if block.call.name == name and not block.has_result:
                return block
        return None
