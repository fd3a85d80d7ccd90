"""`cogni chat RUN`: conversation, input box, status line and a sidebar of saved chats.

The model loads and replies in thread workers; they only post messages, and everything that touches
widgets happens on the app's own thread. The chat itself is a `chat.controller.ChatController`, which
saves to the history (a reply from the worker, as it finishes). Replies come from any
`chat.session.ReplySource` (a loaded run is `inference.decoding.ChatModel`, or for `cogni chat RUN`
`inference.model_process.ModelProcess`, which decodes in a child process), which is how tests script a model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message as TextualMessage
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Footer, Header

from cognimamba.chat.controller import ChatController
from cognimamba.chat.history import HistoryStore
from cognimamba.chat.session import (
    ChatEvent,
    ChatSession,
    ContextTrimmed,
    ReplyFinished,
    ReplySource,
    ReplyStarted,
    TextDelta,
    ToolRan,
    ToolSkipped,
    describe_settings,
    settings_with,
)
from cognimamba.chat.tools import ToolBox
from cognimamba.chat.tui.conversation import (
    AssistantMessage,
    Conversation,
    Notice,
    UserMessage,
    Welcome,
    code_blocks,
)
from cognimamba.chat.tui.dialogs import (
    AskScreen,
    ConfirmScreen,
    HelpScreen,
    SettingsScreen,
    SystemPromptScreen,
    ToolsScreen,
)
from cognimamba.chat.tui.inspector import Inspection, InspectorScreen
from cognimamba.chat.tui.prompt_input import PromptInput
from cognimamba.chat.tui.run_picker import RunPickerScreen
from cognimamba.chat.tui.sidebar import Sidebar
from cognimamba.chat.tui.status_line import StatusLine
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.runs.layout import find_runs

NEW_CHAT_TITLE = "New chat"
# Text reaches the screen at most this often: drawing each token competes with decoding for the CPU
# (benchmarks/README.md has the app's speed against `--prompt`).
FRAME_SECONDS = 1 / 15
SIDEBAR_MIN_WIDTH = 100  # below this terminal width the chat list starts hidden (Ctrl+B shows it)
INSPECTED_ALTERNATIVES = 5  # the likeliest tokens the inspector lists for each position
SECOND_CTRL_C_SECONDS = 3.0  # a second Ctrl+C within this quits


@dataclass
class ModelLoaded(TextualMessage):
    source: ReplySource
    run_label: str | None = None  # a run opened from the app: the chat goes on with it


@dataclass
class ModelFailed(TextualMessage):
    error: str


@dataclass
class ReplyEnded(TextualMessage):
    session: ChatSession
    error: str | None = None


@dataclass
class NewChatDefaults:
    """What a new chat starts with: the CLI's --system and setting overrides on top of the run's defaults."""

    system_prompt: str = ""
    setting_overrides: dict[str, Any] = field(default_factory=dict)

    def settings(self, run_defaults: GenerationConfig) -> GenerationConfig:
        return settings_with(run_defaults, self.setting_overrides, "chat settings")


class ChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "cogni chat"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+c", "interrupt", "Stop / quit", show=False, priority=True),
        Binding("f5", "regenerate", "Retry", priority=True),
        Binding("f6", "edit_last", "Edit", priority=True),
        Binding("f7", "copy_reply", "Copy", priority=True),
        Binding("alt+c", "copy_code", "Copy code", show=False),
        Binding("alt+up", "select_reply(-1)", "Previous reply", show=False),
        Binding("alt+down", "select_reply(1)", "Next reply", show=False),
        Binding("alt+left", "reply_version(-1)", "Earlier version", show=False),
        Binding("alt+right", "reply_version(1)", "Later version", show=False),
        Binding("f10", "inspect", "Inspect", show=False),
        Binding("ctrl+r", "open_run", "Open run", show=False),
        Binding("ctrl+f", "search_chats", "Search chats", show=False),
        Binding("f1", "help", "Help"),
        Binding("ctrl+n", "new_chat", "New"),
        Binding("ctrl+o", "focus_chats", "Chats"),
        Binding("f2", "rename_chat", "Rename", show=False),
        Binding("f3", "edit_system_prompt", "System"),
        Binding("f4", "edit_settings", "Settings"),
        Binding("ctrl+t", "toggle_tools", "Tools"),
        Binding("f9", "show_tools", "Tool list", show=False),
        Binding("ctrl+s", "export_chat", "Export", show=False),
        Binding("ctrl+l", "clear_chat", "Clear chat", show=False),
        Binding("f8", "delete_chat", "Delete chat", show=False),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar", show=False),
    ]
    # Shown on the help screen with the bindings above.
    INPUT_KEYS: ClassVar[list[tuple[str, str]]] = [
        ("enter", "send the message"),
        ("up / down", "recall earlier messages (on the first / last line)"),
        ("shift+enter, ctrl+j", "new line in the message"),
        ("ctrl+p", "command palette (every action)"),
        ("ctrl+q", "quit"),
        ("tab / shift+tab", "move between the chat list and the message box"),
    ]
    # What each action is called in the command palette.
    COMMAND_TITLES: ClassVar[dict[str, tuple[str, str]]] = {
        "new_chat": ("New chat", "Start an empty chat (the current one stays in the sidebar)"),
        "rename_chat": ("Rename chat", "Give the current chat another title"),
        "delete_chat": ("Delete chat", "Delete the current chat from the history"),
        "clear_chat": ("Clear chat", "Remove all messages of the current chat, keep its settings"),
        "export_chat": ("Export chat to Markdown", "Write the current chat to a .md file"),
        "edit_system_prompt": ("Edit system prompt", "The system prompt of the current chat"),
        "edit_settings": ("Generation settings", "Temperature, top-k, top-p, max tokens of the current chat"),
        "toggle_tools": ("Toggle tool execution", "Run the built-in calculator and clock when the model asks"),
        "show_tools": ("Show tools", "The built-in tools and the --tools definitions the model is told about"),
        "stop": ("Stop reply", "Stop the reply being generated"),
        "interrupt": ("Stop, or quit", "Stop the reply; with none, a second Ctrl+C quits"),
        "regenerate": ("Regenerate reply", "Answer the last message again; the earlier answer stays (Alt+←/→)"),
        "edit_last": ("Edit last message", "Take your last message back into the box to edit and resend"),
        "copy_reply": ("Copy reply", "Copy the selected (or last) reply to the clipboard"),
        "copy_code": ("Copy code block", "Copy the last code block of the selected (or last) reply"),
        "select_reply(-1)": ("Select previous reply", "Copy, inspect and versions act on the selected reply"),
        "select_reply(1)": ("Select next reply", "Copy, inspect and versions act on the selected reply"),
        "reply_version(-1)": ("Earlier reply version", "Show the answer before a regenerate"),
        "reply_version(1)": ("Later reply version", "Show the answer after a regenerate"),
        "inspect": ("Token inspector", "The selected reply token by token: probabilities, alternatives, prompt"),
        "open_run": ("Open another run", "Pick a run dir near this one; the chat goes on with it"),
        "search_chats": ("Search chats", "Filter the chat list by title and message text"),
        "toggle_sidebar": ("Toggle chat list", "Show or hide the sidebar of saved chats"),
        "focus_chats": ("Open a saved chat", "Move to the list of saved chats (Enter opens one)"),
        "help": ("Help", "Key bindings"),
    }

    def __init__(self, load_source: Callable[[], ReplySource], history: HistoryStore, run_label: str = "",
                 tools: ToolBox | None = None, defaults: NewChatDefaults | None = None,
                 chat_id: int | None = None, open_run: Callable[[Path], ReplySource] | None = None,
                 runs_folder: Path | None = None) -> None:
        """`open_run` loads another run dir (the run picker lists those under `runs_folder`)."""
        super().__init__()
        self.load_source = load_source
        self.open_run_source = open_run
        self.runs_folder = runs_folder
        self._chat_filter = ""
        self._sidebar_auto = True  # follows the terminal width until the user toggles it
        self._selected_reply: AssistantMessage | None = None
        self._last_interrupt = 0.0
        self._quitting = False
        self._reply_done = threading.Event()
        self._reply_done.set()
        self.history = history
        self.run_label = run_label
        self.tools = tools or ToolBox()
        self.defaults = defaults or NewChatDefaults()
        self.source: ReplySource | None = None
        self.load_error: str | None = None
        self.chat = self.new_controller(GenerationConfig())
        self._initial_chat = chat_id
        self._settings_edited = False
        self._cancel = threading.Event()
        self._generating: ChatSession | None = None
        self._reply_lock = threading.Lock()  # one reply at a time uses the model and its KV cache
        self._reply_widget: AssistantMessage | None = None
        self._prompt_tokens = 0  # of the reply streaming now, for the live context count
        # (session, event) from the reply worker, drawn by the frame timer; the session tells which chat it was.
        self._pending: deque[tuple[ChatSession, ChatEvent]] = deque()
        # The frame timer and a reply's end both draw; one draw at a time, or a later batch (a tool result) can
        # overtake an earlier one still mounting (the call block it belongs in).
        self._drawing = asyncio.Lock()
        self._frames: Timer | None = None

    # ------------------------------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="main"):
                yield Conversation(id="conversation")
                yield PromptInput(id="prompt")
                yield StatusLine(id="status")
        yield Footer()

    @property
    def conversation(self) -> Conversation:
        return self.query_one(Conversation)

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    @property
    def generating(self) -> bool:
        return self._generating is not None

    @property
    def session(self) -> ChatSession:
        return self.chat.session

    @property
    def chat_id(self) -> int | None:
        return self.chat.chat_id

    def new_controller(self, run_defaults: GenerationConfig) -> ChatController:
        session = ChatSession(self.defaults.system_prompt, self.defaults.settings(run_defaults), self.tools)
        return ChatController(session, self.history, self.run_label, untitled=NEW_CHAT_TITLE)

    async def on_mount(self) -> None:
        self.sub_title = NEW_CHAT_TITLE
        self.status.tools_enabled = self.tools.enabled
        self.status.settings = describe_settings(self.session.settings)
        self.query_one(PromptInput).focus()
        self.fit_sidebar(self.size.width)
        await self.conversation.show_messages([], self.session.system_prompt)
        if self._initial_chat is not None:
            await self.open_chat(self._initial_chat)
        await self.refresh_chats()
        self.load_model()

    @work(thread=True, group="load", exit_on_error=False)
    def load_model(self, run: Path | None = None) -> None:
        """The model at start, or another run (`run`) opened from the app."""
        try:
            if run is None:
                source = self.load_source()
            else:
                assert self.open_run_source is not None
                source = self.open_run_source(run)
        except CogniError as error:
            self.post_message(ModelFailed(str(error)))
        except Exception as error:  # a broken run dir can fail in many ways; the user gets one line
            self.post_message(ModelFailed(f"could not load the model: {type(error).__name__}: {error}"))
        else:
            self.post_message(ModelLoaded(source, None if run is None else str(run)))

    async def on_model_loaded(self, message: ModelLoaded) -> None:
        replaced, self.source = self.source, message.source
        if replaced is not None and replaced is not message.source:
            self.close_source(replaced)
        if hasattr(message.source, "top_alternatives"):  # a source that can say how likely each token was
            message.source.top_alternatives = INSPECTED_ALTERNATIVES
        if message.run_label is not None:
            self.run_label = self.chat.run_label = message.run_label
            self.notify(f"Now talking to {message.run_label}; the chat goes on.")
        elif self.chat_id is None and not self._settings_edited:
            self.session.settings = self.defaults.settings(message.source.defaults)
        self.status.state = "ready"
        self.status.model = message.source.name
        self.status.context_length = message.source.context_length
        self.update_status()
        notice = getattr(message.source, "notice", None)  # e.g. a --compile that fell back to eager decoding
        if notice:
            self.notify(notice, severity="warning", timeout=10)

    @work(thread=True, group="close", exit_on_error=False)
    def close_source(self, source: ReplySource) -> None:
        """A source replaced by another run's ends (a model process: its child exits) once no reply uses it."""
        close = getattr(source, "close", None)
        if close is not None:
            with self._reply_lock:
                close()

    def on_unmount(self) -> None:
        self._cancel.set()  # a reply thread still running stops at its next token instead of holding up the exit

    def on_model_failed(self, message: ModelFailed) -> None:
        if self.source is not None:  # another run failed to open: this one stays
            self.status.state = "ready"
            self.notify(message.error, severity="error", timeout=15)
            return
        # The CLI checks the run before opening the app; what still fails here ends the app with the error.
        self.load_error = message.error
        self.exit(return_code=2)

    def on_resize(self, event: events.Resize) -> None:
        self.fit_sidebar(event.size.width)

    def fit_sidebar(self, width: int) -> None:
        """The chat list takes a quarter of a narrow terminal's width: hide it there until asked for."""
        if self._sidebar_auto:
            self.query_one(Sidebar).display = width >= SIDEBAR_MIN_WIDTH

    def update_status(self) -> None:
        self.status.settings = describe_settings(self.session.settings)
        self.status.tools_enabled = self.tools.enabled
        if self.source is not None and not self.generating:
            try:
                self.status.context_used = self.session.plan_prompt(self.source).tokens
            except CogniError:
                self.status.context_used = self.source.context_length

    async def refresh_chats(self) -> None:
        records = self.history.list_chats()
        query = self._chat_filter.casefold()
        if query:
            records = [record for record in records if query in record.title.casefold()
                       or any(query in message.content.casefold() for message in self.history.messages(record.id))]
        await self.query_one(Sidebar).show_chats(records, self.chat_id)

    # ------------------------------------------------------------------------------------------- chats

    async def start_new_chat(self) -> None:
        self.action_stop()
        self.chat = self.new_controller(self.source.defaults if self.source is not None else GenerationConfig())
        self._settings_edited = False
        self.sub_title = self.chat.display_title
        await self.conversation.show_messages([], self.session.system_prompt)
        self.status.speed = ""
        self.update_status()
        await self.refresh_chats()
        self.query_one(PromptInput).focus()

    async def open_chat(self, chat_id: int) -> None:
        """Reopen a saved chat: its messages, system prompt and settings."""
        self.action_stop()
        try:
            self.chat = ChatController.open(self.history, chat_id, self.tools, self.run_label, NEW_CHAT_TITLE)
        except CogniError as error:
            self.notify(str(error), severity="error")
            return
        self.sub_title = self.chat.display_title
        await self.conversation.show_messages(self.session.messages, self.session.system_prompt)
        prompt = self.query_one(PromptInput)
        for message in self.session.messages:
            if message.role == "user":
                prompt.remember(message.content)
        self.status.speed = ""
        self.update_status()
        await self.refresh_chats()

    @on(Sidebar.ChatChosen)
    async def chat_chosen(self, message: Sidebar.ChatChosen) -> None:
        if message.chat_id != self.chat_id:
            await self.open_chat(message.chat_id)
        self.query_one(PromptInput).focus()

    @on(Sidebar.NewChatPressed)
    async def new_chat_pressed(self) -> None:
        await self.start_new_chat()

    @on(Sidebar.SearchChanged)
    async def search_changed(self, message: Sidebar.SearchChanged) -> None:
        self._chat_filter = message.query.strip()
        await self.refresh_chats()

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
        was_new = self.chat_id is None
        cancel = threading.Event()
        try:
            events = self.chat.send(text, self.source, cancel)  # saves the message (and a new chat) now
        except CogniError as error:  # it cannot fit: the text stays in the box to be shortened
            self.notify(str(error), severity="error", timeout=20)
            return
        message.prompt_input.clear()
        message.prompt_input.remember(text)
        self.sub_title = self.chat.display_title
        await self.conversation.remove_children(Welcome)
        await self.conversation.mount(UserMessage(text))
        if was_new:
            await self.refresh_chats()
        self.start_reply(events, cancel)

    def start_reply(self, events: Iterator[ChatEvent], cancel: threading.Event) -> None:
        assert self.source is not None
        self._cancel = cancel
        self._generating = self.session
        self._reply_done.clear()
        if self._frames is None:
            self._frames = self.set_interval(FRAME_SECONDS, self.draw_pending)
        self.status.state = "generating… (Esc or Ctrl+C stops)"
        self.generate_reply(self.session, events, self.source)

    @work(thread=True, group="reply", exit_on_error=False)
    def generate_reply(self, session: ChatSession, events: Iterator[ChatEvent], source: ReplySource) -> None:
        """Run the reply; the controller saves it to its chat, even if the user has moved on to another.

        Events wait in a queue that the app drains a frame at a time (FRAME_SECONDS), not a token at a time.
        """
        error = None
        try:
            with self._reply_lock:
                try:
                    for event in events:
                        self._pending.append((session, event))
                except CogniError as problem:
                    error = str(problem)
                except Exception as problem:  # show it in the chat rather than kill the app mid-conversation
                    error = f"generation failed: {type(problem).__name__}: {problem}"
        finally:
            self._reply_done.set()
        self.post_message(ReplyEnded(session, error))

    async def draw_pending(self) -> None:
        """Show the events that arrived since the last frame, consecutive deltas as one, and the speed so far."""
        async with self._drawing:
            batch = []
            while self._pending:
                batch.append(self._pending.popleft())
            text = ""
            for session, event in batch:
                if session is not self.session:
                    continue
                if isinstance(event, TextDelta):
                    text += event.text
                    continue
                if text and self._reply_widget is not None:
                    await self._reply_widget.append(text)
                text = ""
                await self.show_event(event)
            if text and self._reply_widget is not None:
                await self._reply_widget.append(text)
            if text and self.generating and self.source is not None:
                stats = self.source.stats
                self.status.speed = f"{stats.tokens_per_second:.1f} tok/s" if stats.tokens_per_second else ""
                self.status.context_used = self._prompt_tokens + stats.generated_tokens

    async def show_event(self, event: ChatEvent) -> None:
        conversation = self.conversation
        if isinstance(event, ContextTrimmed):
            await conversation.mount(Notice(event.describe(), "warning"))
        elif isinstance(event, ReplyStarted):
            self._reply_widget = AssistantMessage()
            await conversation.mount(self._reply_widget)
            self.status.context_used = self._prompt_tokens = event.prompt_tokens
        elif isinstance(event, ReplyFinished) and self._reply_widget is not None:
            self._reply_widget.inspection = Inspection(event.prompt, list(event.stats.token_choices))
            await self._reply_widget.finish(event.message)
            stats = event.stats
            self.status.speed = f"{stats.tokens_per_second:.1f} tok/s" if stats.tokens_per_second else ""
            self.status.context_used = event.context_used
        elif isinstance(event, ToolRan):
            block = conversation.pending_block(event.call.name)
            if block is not None:
                block.set_result(event.result.content, event.result.ok)
        elif isinstance(event, ToolSkipped):
            block = conversation.pending_block(event.call.name)
            if block is not None:
                block.set_not_run(event.reason)

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        await self.draw_pending()
        if self._frames is not None:
            self._frames.stop()
            self._frames = None
        if self._generating is message.session:
            self._generating = None
        if message.session is not self.session or self._quitting:
            return
        self._reply_widget = None
        self.status.state = "stopped" if self._cancel.is_set() else "ready"
        if message.error:
            await self.conversation.mount(Notice(message.error, "error"))
            self.status.state = "error"
        await self.refresh_chats()

    # ------------------------------------------------------------------------------------------- actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Chat actions wait while a dialog is open (the dialog has the keys)."""
        name = f"{action}({parameters[0]})" if parameters else action
        return not (name in self.COMMAND_TITLES and isinstance(self.screen, ModalScreen))

    def action_stop(self) -> None:
        if self.generating:
            self._cancel.set()

    async def action_interrupt(self) -> None:
        """Ctrl+C: stop the reply; with none streaming, copy a selection, or quit when pressed twice."""
        now = time.monotonic()
        if self.generating:
            self.action_stop()
            self._last_interrupt = now
            return
        focused = self.focused
        if isinstance(focused, PromptInput) and focused.selected_text:
            self.copy_to_clipboard(focused.selected_text)
            return
        if now - self._last_interrupt < SECOND_CTRL_C_SECONDS:
            await self.action_quit()
            return
        self._last_interrupt = now
        self.notify("Press Ctrl+C again (or Ctrl+Q) to quit.")

    async def action_quit(self) -> None:
        """Quit; a reply still streaming is stopped and saved first, marked as stopped, as Esc would."""
        self._quitting = True
        if self.generating:
            self._cancel.set()
            await asyncio.to_thread(self._reply_done.wait, 10)
        self.exit()

    async def action_new_chat(self) -> None:
        await self.start_new_chat()

    def action_help(self) -> None:
        keys = [(binding.key.replace(",", ", "), self.COMMAND_TITLES[binding.action][0]) for binding in self.BINDINGS
                if isinstance(binding, Binding)]
        self.push_screen(HelpScreen([*keys, *self.INPUT_KEYS]))

    def action_focus_chats(self) -> None:
        sidebar = self.query_one(Sidebar)
        sidebar.display = True
        sidebar.focus_list()

    def action_search_chats(self) -> None:
        sidebar = self.query_one(Sidebar)
        sidebar.display = True
        sidebar.focus_search()

    def action_toggle_sidebar(self) -> None:
        self._sidebar_auto = False
        sidebar = self.query_one(Sidebar)
        sidebar.display = not sidebar.display

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
        self.push_screen(ToolsScreen(self.tools))

    def action_edit_system_prompt(self) -> None:
        async def done(text: str | None) -> None:
            if text is None or text == self.session.system_prompt:
                return
            self.chat.set_system_prompt(text)
            await self.conversation.show_system_prompt(text)
            self.notify("System prompt updated for this chat." if text else "System prompt removed.")
            self.update_status()

        self.push_screen(SystemPromptScreen(self.session.system_prompt), done)

    def action_edit_settings(self) -> None:
        def done(settings: GenerationConfig | None) -> None:
            if settings is None:
                return
            self.chat.set_settings(settings)
            self._settings_edited = True
            self.update_status()

        self.push_screen(SettingsScreen(self.session.settings), done)

    def action_rename_chat(self) -> None:
        highlighted = self.query_one(Sidebar).highlighted()
        if highlighted is not None and highlighted.chat_id != self.chat_id:
            chat_id = highlighted.chat_id

            async def rename_other(title: str | None) -> None:
                if title:
                    self.history.update_chat(chat_id, title=title)
                    await self.refresh_chats()

            self.push_screen(AskScreen("New title for this chat", highlighted.title), rename_other)
            return

        async def done(title: str | None) -> None:
            if not title:
                return
            self.chat.rename(title)
            self.sub_title = self.chat.display_title
            await self.refresh_chats()

        self.push_screen(AskScreen("New title for this chat", str(self.sub_title)), done)

    def action_delete_chat(self) -> None:
        highlighted = self.query_one(Sidebar).highlighted()
        if highlighted is not None and highlighted.chat_id != self.chat_id:
            chat_id = highlighted.chat_id

            async def delete_other(confirmed: bool | None) -> None:
                if confirmed:
                    self.history.delete_chat(chat_id)
                    self.notify(f"Deleted “{highlighted.title}”.")
                    await self.refresh_chats()

            self.push_screen(ConfirmScreen(f"Delete “{highlighted.title}” and all its messages?"), delete_other)
            return
        if self.chat_id is None:
            self.notify("This chat is not saved yet; there is nothing to delete.")
            return

        async def done(confirmed: bool | None) -> None:
            if confirmed and self.chat_id is not None:
                self.action_stop()
                self.chat.delete()
                self.notify(f"Deleted “{self.sub_title}”.")
                await self.start_new_chat()

        self.push_screen(ConfirmScreen(f"Delete “{self.sub_title}” and all its messages?"), done)

    def action_clear_chat(self) -> None:
        async def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            self.action_stop()
            self.chat.clear()
            await self.conversation.show_messages([], self.session.system_prompt)
            self.update_status()

        self.push_screen(ConfirmScreen("Remove all messages of this chat (title, system prompt and settings stay)?"),
                         done)

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

        self.push_screen(AskScreen("Export this chat to Markdown file", self.chat.export_name()), done)

    # ------------------------------------------------------------------------------------------- edit, copy

    def remove_from_last_user_message(self, keep_it: bool) -> None:
        """Take the widgets of the last turn away (from the last user message, or just after it)."""
        widgets = list(self.conversation.children)
        users = [i for i, widget in enumerate(widgets) if isinstance(widget, UserMessage)]
        start = users[-1] + (1 if keep_it else 0) if users else len(widgets)
        for widget in widgets[start:]:
            widget.remove()
        self._selected_reply = None

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
        self.remove_from_last_user_message(keep_it=True)
        self.start_reply(events, cancel)

    def action_edit_last(self) -> None:
        if self.generating:
            self.notify("A reply is still streaming; Esc or Ctrl+C stops it.", severity="warning")
            return
        text = self.chat.take_back_last()
        if text is None:
            self.notify("There is no message to edit yet.")
            return
        self.remove_from_last_user_message(keep_it=False)
        prompt = self.query_one(PromptInput)
        prompt.load_text(text)
        prompt.move_cursor(prompt.document.end)
        prompt.focus()
        self.update_status()
        self.notify("Your last message is back in the box: edit it and press Enter (its reply was removed).")

    def target_reply(self) -> AssistantMessage | None:
        """The reply chosen with Alt+↑/↓, or the last finished one."""
        if self._selected_reply is not None and self._selected_reply.is_attached:
            return self._selected_reply
        finished = [reply for reply in self.conversation.query(AssistantMessage) if reply.message is not None]
        return finished[-1] if finished else None

    def action_select_reply(self, step: int) -> None:
        replies = [reply for reply in self.conversation.query(AssistantMessage) if reply.message is not None]
        if not replies:
            return
        current = self.target_reply()
        index = replies.index(current) if current in replies else len(replies)
        chosen = replies[max(0, min(len(replies) - 1, index + step))]
        for reply in replies:
            reply.set_class(reply is chosen, "selected")
        self._selected_reply = chosen
        chosen.scroll_visible()

    def action_copy_reply(self) -> None:
        reply = self.target_reply()
        if reply is None or reply.message is None:
            self.notify("There is no reply to copy yet.")
            return
        self.copy_to_clipboard(reply.message.content)
        self.notify(f"Copied the reply ({len(reply.message.content)} characters).")

    def action_copy_code(self) -> None:
        reply = self.target_reply()
        blocks = code_blocks(reply.message.content) if reply is not None and reply.message is not None else []
        if not blocks:
            self.notify("The reply has no code block; F7 copies all of it.")
            return
        self.copy_to_clipboard(blocks[-1])
        self.notify(f"Copied the code block ({len(blocks[-1].splitlines())} lines).")

    async def action_reply_version(self, step: int) -> None:
        reply = self.target_reply()
        message = reply.message if reply is not None else None
        if reply is None or message is None or len(message.meta.get("versions") or []) < 2:
            self.notify("This reply has one version; F5 answers the last message again.")
            return
        self.chat.show_version(message, message.meta.get("version", 0) + step)
        await reply.show_version(message)
        self.update_status()

    def action_inspect(self) -> None:
        reply = self.target_reply()
        if reply is None:
            self.notify("There is no finished reply to inspect yet.")
            return
        self.push_screen(InspectorScreen(reply.inspection or Inspection()))

    def action_open_run(self) -> None:
        if self.open_run_source is None or self.runs_folder is None:
            self.notify("This chat talks to a server; there are no runs to open.")
            return
        folder = self.runs_folder

        def done(run: Path | None) -> None:
            if run is None:
                return
            self.action_stop()
            self.status.state = f"loading {run.name}…"
            self.load_model(run)

        self.push_screen(RunPickerScreen(folder, find_runs(folder), self.run_label), done)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, (title, help_text) in self.COMMAND_TITLES.items():
            yield SystemCommand(title, help_text, self._palette_callback(action))

    def _palette_callback(self, action: str) -> Callable[[], Any]:
        async def run() -> None:
            await self.run_action(action)

        return run
