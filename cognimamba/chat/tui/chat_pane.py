"""The chat pane: one chat's conversation, message box and status line, with its reply stream and actions.

As oterm's `ChatContainer` does, the pane owns what happens inside the open chat: sending, the reply streaming
in, stop, regenerate, edit, copy, reply versions, the token inspector, and the chat's system prompt, settings,
tools, clearing and export. The app around it loads the model and keeps the list of chats; it tells the pane
which chat to show (`show_chat`) and which model to talk to (`use_source`).

A reply runs in a thread worker that only queues its events (`tui/reply_stream`); a frame timer draws them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message as TextualMessage
from textual.timer import Timer

from cognimamba.chat.controller import ChatController
from cognimamba.chat.session import ChatEvent, ChatSession, ReplySource, describe_settings
from cognimamba.chat.tools import ToolBox
from cognimamba.chat.tui.conversation import Conversation, Notice, UserMessage, Welcome, code_blocks
from cognimamba.chat.tui.dialogs import AskScreen, ConfirmScreen, SettingsScreen, SystemPromptScreen, ToolsScreen
from cognimamba.chat.tui.inspector import Inspection, InspectorScreen
from cognimamba.chat.tui.prompt_input import PromptInput
from cognimamba.chat.tui.reply_stream import FRAME_SECONDS, Reply, ReplyStream
from cognimamba.chat.tui.status_line import StatusLine
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError


@dataclass
class ReplyEnded(TextualMessage, bubble=False):
    """From the reply's worker, once the reply is saved (or failed: `error`)."""

    reply: Reply
    error: str | None = None


class ChatPane(Vertical):
    """The open chat: its messages, the box to write in, its status line, and every key that acts on its replies."""

    @dataclass
    class ChatChanged(TextualMessage):
        """The open chat was saved or retitled: the chat list and the app's title follow."""

    def __init__(self, chat: ChatController, tools: ToolBox, model_lock: threading.Lock, id: str | None = None) -> None:
        """`model_lock`: one reply at a time uses the model and its KV cache (the app closes a model under it)."""
        super().__init__(id=id)
        self.chat = chat
        self.tools = tools
        self.model_lock = model_lock
        self.source: ReplySource | None = None
        self.settings_edited = False  # this chat's settings were changed, so a model loading now keeps them
        self.stream = ReplyStream()
        self._reply: Reply | None = None
        self._frames: Timer | None = None  # draws the stream while a reply is on its way
        self._quitting = False  # the app is quitting: a reply that ends now only needs saving

    def compose(self) -> ComposeResult:
        yield Conversation(id="conversation")
        yield PromptInput(id="prompt")
        yield StatusLine(id="status")

    @property
    def conversation(self) -> Conversation:
        return self.query_one(Conversation)

    @property
    def prompt_input(self) -> PromptInput:
        return self.query_one(PromptInput)

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    @property
    def session(self) -> ChatSession:
        return self.chat.session

    @property
    def generating(self) -> bool:
        return self._reply is not None

    def on_unmount(self) -> None:
        self.action_stop()  # a reply thread still running stops at its next token instead of holding up the exit

    # ------------------------------------------------------------------------------------------- the chat shown

    async def show_chat(self, chat: ChatController) -> None:
        """Show another chat, new or reopened; a reply still streaming stops, and is saved to its own chat."""
        self.action_stop()
        self.chat, self.settings_edited = chat, False
        await self.conversation.show_messages(self.session.messages, self.session.system_prompt)
        for message in self.session.messages:
            if message.role == "user":
                self.prompt_input.remember(message.content)
        self.status.speed = ""
        self.update_status()

    def use_source(self, source: ReplySource) -> None:
        self.source = source
        self.status.state = "ready"
        self.status.model = source.name
        self.status.context_length = source.context_length
        self.update_status()

    def update_status(self) -> None:
        self.status.settings = describe_settings(self.session.settings)
        self.status.tools_enabled = self.tools.enabled
        if self.source is not None and not self.generating:
            try:
                self.status.context_used = self.session.plan_prompt(self.source).tokens
            except CogniError:
                self.status.context_used = self.source.context_length

    # ------------------------------------------------------------------------------------------- sending

    def can_start_reply(self) -> bool:
        if self.source is None:
            self.notify("The model is still loading; your message stays in the box.", severity="warning")
            return False
        if self.generating:
            self.notify("A reply is still streaming; Esc or Ctrl+C stops it.", severity="warning")
            return False
        return True

    @on(PromptInput.Submitted)
    async def send(self, message: PromptInput.Submitted) -> None:
        text = message.text.strip()
        if not text or not self.can_start_reply():
            return
        assert self.source is not None
        cancel = threading.Event()
        try:
            events = self.chat.send(text, self.source, cancel)  # saves the message (and a new chat) now
        except CogniError as error:  # it cannot fit: the text stays in the box to be shortened
            self.notify(str(error), severity="error", timeout=20)
            return
        message.prompt_input.clear()
        message.prompt_input.remember(text)
        await self.conversation.remove_children(Welcome)
        await self.conversation.mount(UserMessage(text))
        self.post_message(self.ChatChanged())
        self.start_reply(events, cancel)

    def start_reply(self, events: Iterator[ChatEvent], cancel: threading.Event) -> None:
        assert self.source is not None
        self._reply = Reply(self.session, cancel)
        if self._frames is None:
            self._frames = self.set_interval(FRAME_SECONDS, self.draw_pending)
        self.status.state = "generating… (Esc or Ctrl+C stops)"
        self.generate_reply(self._reply, events)

    @work(thread=True, group="reply", exit_on_error=False)
    def generate_reply(self, reply: Reply, events: Iterator[ChatEvent]) -> None:
        """Run the reply; the controller saves it to its chat, even if the user has moved on to another."""
        error = self.stream.run(reply, events, self.model_lock)
        self.post_message(ReplyEnded(reply, error))

    async def draw_pending(self) -> None:
        await self.stream.draw(self.conversation, self.status, self.session, self.source if self.generating else None)

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        await self.draw_pending()
        if self._frames is not None:
            self._frames.stop()
            self._frames = None
        if self._reply is message.reply:
            self._reply = None
        if message.reply.session is not self.session or self._quitting:
            return
        self.conversation.streaming = None
        self.status.state = "stopped" if message.reply.cancel.is_set() else "ready"
        if message.error:
            await self.conversation.mount(Notice(message.error, "error"))
            self.status.state = "error"
        self.post_message(self.ChatChanged())

    async def stop_for_exit(self, wait_seconds: float) -> None:
        """Stop a reply still streaming and wait (up to `wait_seconds`) until it is saved, marked as stopped."""
        self._quitting = True
        reply = self._reply
        if reply is not None:
            reply.cancel.set()
            await asyncio.to_thread(reply.done.wait, wait_seconds)

    # ------------------------------------------------------------------------------------------- per reply

    def action_stop(self) -> None:
        if self._reply is not None:
            self._reply.cancel.set()

    def action_regenerate(self) -> None:
        if not self.can_start_reply():
            return
        assert self.source is not None
        cancel = threading.Event()
        try:
            events = self.chat.regenerate(self.source, cancel)
        except CogniError as error:
            self.notify(str(error), severity="warning")
            return
        self.conversation.remove_last_turn(keep_user_message=True)
        self.start_reply(events, cancel)

    def action_edit_last(self) -> None:
        if self.generating:
            self.notify("A reply is still streaming; Esc or Ctrl+C stops it.", severity="warning")
            return
        text = self.chat.take_back_last()
        if text is None:
            self.notify("There is no message to edit yet.")
            return
        self.conversation.remove_last_turn(keep_user_message=False)
        prompt = self.prompt_input
        prompt.load_text(text)
        prompt.move_cursor(prompt.document.end)
        prompt.focus()
        self.update_status()
        self.notify("Your last message is back in the box: edit it and press Enter (its reply was removed).")

    def action_select_reply(self, step: int) -> None:
        self.conversation.select_reply(step)

    def action_copy_reply(self) -> None:
        reply = self.conversation.target_reply()
        if reply is None or reply.message is None:
            self.notify("There is no reply to copy yet.")
            return
        self.app.copy_to_clipboard(reply.message.content)
        self.notify(f"Copied the reply ({len(reply.message.content)} characters).")

    def action_copy_code(self) -> None:
        reply = self.conversation.target_reply()
        blocks = code_blocks(reply.message.content) if reply is not None and reply.message is not None else []
        if not blocks:
            self.notify("The reply has no code block; F7 copies all of it.")
            return
        self.app.copy_to_clipboard(blocks[-1])
        self.notify(f"Copied the code block ({len(blocks[-1].splitlines())} lines).")

    async def action_reply_version(self, step: int) -> None:
        reply = self.conversation.target_reply()
        message = reply.message if reply is not None else None
        if reply is None or message is None or len(message.meta.get("versions") or []) < 2:
            self.notify("This reply has one version; F5 answers the last message again.")
            return
        self.chat.show_version(message, message.meta.get("version", 0) + step)
        await reply.show_version(message)
        self.update_status()

    def action_inspect(self) -> None:
        reply = self.conversation.target_reply()
        if reply is None:
            self.notify("There is no finished reply to inspect yet.")
            return
        self.app.push_screen(InspectorScreen(reply.inspection or Inspection()))

    # ------------------------------------------------------------------------------------------- the chat's own

    def action_edit_system_prompt(self) -> None:
        async def done(text: str | None) -> None:
            if text is None or text == self.session.system_prompt:
                return
            self.chat.set_system_prompt(text)
            await self.conversation.show_system_prompt(text)
            self.notify("System prompt updated for this chat." if text else "System prompt removed.")
            self.update_status()

        self.app.push_screen(SystemPromptScreen(self.session.system_prompt), done)

    def action_edit_settings(self) -> None:
        def done(settings: GenerationConfig | None) -> None:
            if settings is None:
                return
            self.chat.set_settings(settings)
            self.settings_edited = True
            self.update_status()

        self.app.push_screen(SettingsScreen(self.session.settings), done)

    def action_toggle_tools(self) -> None:
        self.tools.enabled = not self.tools.enabled
        if self.tools.enabled and self.source is not None:
            try:
                self.session.check_tools_fit(self.source, self.tools)
            except CogniError as error:
                self.tools.enabled = False
                self.notify(str(error), severity="error", timeout=20)
                return
        names = ", ".join(sorted(self.tools.builtins))
        self.notify(f"Tool execution on: the model may call {names}." if self.tools.enabled
                    else "Tool execution off: tool calls are shown, not run.")
        self.update_status()

    def action_show_tools(self) -> None:
        self.app.push_screen(ToolsScreen(self.tools))

    def action_clear_chat(self) -> None:
        async def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            self.action_stop()
            self.chat.clear()
            await self.conversation.show_messages([], self.session.system_prompt)
            self.update_status()

        self.app.push_screen(
            ConfirmScreen("Remove all messages of this chat (title, system prompt and settings stay)?"), done)

    def action_export_chat(self) -> None:
        def done(answer: str | None) -> None:
            if not answer:
                return
            try:
                written = self.chat.export(Path(answer))
            except (OSError, CogniError) as error:
                self.notify(f"Could not write {Path(answer).expanduser()}: {error}", severity="error")
                return
            self.notify(f"Exported to {written}")

        self.app.push_screen(AskScreen("Export this chat to Markdown file", self.chat.export_name()), done)
