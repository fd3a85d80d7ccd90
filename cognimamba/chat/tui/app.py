"""`cogni chat RUN`: conversation, input box, status line and a sidebar of saved chats.

The model loads and replies in thread workers; they only post messages, and everything that touches
widgets happens on the app's own thread. The chat itself is a `chat.controller.ChatController`, which
saves to the history (a reply from the worker, as it finishes). Replies come from any
`chat.session.ReplySource` (a loaded run is `inference.decoding.ChatModel`), which is how tests script a model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message as TextualMessage
from textual.screen import ModalScreen, Screen
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
from cognimamba.chat.tui.conversation import AssistantMessage, Conversation, Notice, UserMessage
from cognimamba.chat.tui.dialogs import (
    AskScreen,
    ConfirmScreen,
    HelpScreen,
    SettingsScreen,
    SystemPromptScreen,
    ToolsScreen,
)
from cognimamba.chat.tui.prompt_input import PromptInput
from cognimamba.chat.tui.sidebar import Sidebar
from cognimamba.chat.tui.status_line import StatusLine
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError

NEW_CHAT_TITLE = "New chat"


@dataclass
class ModelLoaded(TextualMessage):
    source: ReplySource


@dataclass
class ModelFailed(TextualMessage):
    error: str


@dataclass
class ReplyEvent(TextualMessage):
    """A ChatSession event from the reply worker, with the session it belongs to (the user may switch chats)."""

    event: ChatEvent
    session: ChatSession


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
        "toggle_sidebar": ("Toggle chat list", "Show or hide the sidebar of saved chats"),
        "focus_chats": ("Open a saved chat", "Move to the list of saved chats (Enter opens one)"),
        "help": ("Help", "Key bindings"),
    }

    def __init__(self, load_source: Callable[[], ReplySource], history: HistoryStore, run_label: str = "",
                 tools: ToolBox | None = None, defaults: NewChatDefaults | None = None,
                 chat_id: int | None = None) -> None:
        super().__init__()
        self.load_source = load_source
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
        if self._initial_chat is not None:
            await self.open_chat(self._initial_chat)
        await self.refresh_chats()
        self.load_model()

    @work(thread=True, group="load", exit_on_error=False)
    def load_model(self) -> None:
        try:
            source = self.load_source()
        except CogniError as error:
            self.post_message(ModelFailed(str(error)))
        except Exception as error:  # a broken run dir can fail in many ways; the user gets one line
            self.post_message(ModelFailed(f"could not load the model: {type(error).__name__}: {error}"))
        else:
            self.post_message(ModelLoaded(source))

    async def on_model_loaded(self, message: ModelLoaded) -> None:
        self.source = message.source
        if self.chat_id is None and not self._settings_edited:
            self.session.settings = self.defaults.settings(message.source.defaults)
        self.status.state = "ready"
        self.status.model = message.source.name
        self.status.context_length = message.source.context_length
        self.update_status()
        notice = getattr(message.source, "notice", None)  # e.g. a --compile that fell back to eager decoding
        if notice:
            self.notify(notice, severity="warning", timeout=10)

    def on_unmount(self) -> None:
        self._cancel.set()  # a reply thread still running stops at its next token instead of holding up the exit

    def on_model_failed(self, message: ModelFailed) -> None:
        # The CLI checks the run before opening the app; what still fails here ends the app with the error.
        self.load_error = message.error
        self.exit(return_code=2)

    def update_status(self) -> None:
        self.status.settings = describe_settings(self.session.settings)
        self.status.tools_enabled = self.tools.enabled
        if self.source is not None and not self.generating:
            try:
                self.status.context_used = self.session.plan_prompt(self.source).tokens
            except CogniError:
                self.status.context_used = self.source.context_length

    async def refresh_chats(self) -> None:
        await self.query_one(Sidebar).show_chats(self.history.list_chats(), self.chat_id)

    # ------------------------------------------------------------------------------------------- chats

    async def start_new_chat(self) -> None:
        self.action_stop()
        self.chat = self.new_controller(self.source.defaults if self.source is not None else GenerationConfig())
        self._settings_edited = False
        self.sub_title = self.chat.display_title
        await self.conversation.remove_children()
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
        await self.conversation.show_messages(self.session.messages)
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

    # ------------------------------------------------------------------------------------------- sending

    @on(PromptInput.Submitted)
    async def send(self, message: PromptInput.Submitted) -> None:
        text = message.text.strip()
        if not text:
            return
        if self.source is None:
            self.notify("The model is still loading; your message stays in the box.", severity="warning")
            return
        if self.generating:
            self.notify("A reply is still streaming; Esc stops it.", severity="warning")
            return
        message.prompt_input.clear()
        was_new = self.chat_id is None
        self._cancel = threading.Event()
        events = self.chat.send(text, self.source, self._cancel)  # saves the message (and a new chat) now
        self.sub_title = self.chat.display_title
        await self.conversation.mount(UserMessage(text))
        if was_new:
            await self.refresh_chats()
        self._generating = self.session
        self.status.state = "generating… (Esc stops)"
        self.generate_reply(self.session, events)

    @work(thread=True, group="reply", exit_on_error=False)
    def generate_reply(self, session: ChatSession, events: Iterator[ChatEvent]) -> None:
        """Run the reply; the controller saves it to its chat, even if the user has moved on to another."""
        error = None
        with self._reply_lock:
            try:
                for event in events:
                    self.post_message(ReplyEvent(event, session))
            except CogniError as problem:
                error = str(problem)
            except Exception as problem:  # show it in the chat rather than kill the app mid-conversation
                error = f"generation failed: {type(problem).__name__}: {problem}"
        self.post_message(ReplyEnded(session, error))

    async def on_reply_event(self, message: ReplyEvent) -> None:
        event = message.event
        if message.session is not self.session:
            return
        conversation = self.conversation
        if isinstance(event, ContextTrimmed):
            await conversation.mount(Notice(event.describe(), "warning"))
        elif isinstance(event, ReplyStarted):
            self._reply_widget = AssistantMessage()
            await conversation.mount(self._reply_widget)
            self.status.context_used = event.prompt_tokens
        elif isinstance(event, TextDelta) and self._reply_widget is not None:
            await self._reply_widget.append(event.text)
        elif isinstance(event, ReplyFinished) and self._reply_widget is not None:
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
        if self._generating is message.session:
            self._generating = None
        if message.session is not self.session:
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
        return not (action in self.COMMAND_TITLES and isinstance(self.screen, ModalScreen))

    def action_stop(self) -> None:
        if self.generating:
            self._cancel.set()

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

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        sidebar.display = not sidebar.display

    def action_toggle_tools(self) -> None:
        self.tools.enabled = not self.tools.enabled
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
        async def done(title: str | None) -> None:
            if not title:
                return
            self.chat.rename(title)
            self.sub_title = self.chat.display_title
            await self.refresh_chats()

        self.push_screen(AskScreen("New title for this chat", str(self.sub_title)), done)

    def action_delete_chat(self) -> None:
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
            await self.conversation.remove_children()
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

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, (title, help_text) in self.COMMAND_TITLES.items():
            yield SystemCommand(title, help_text, self._palette_callback(action))

    def _palette_callback(self, action: str) -> Callable[[], Any]:
        async def run() -> None:
            await self.run_action(action)

        return run
