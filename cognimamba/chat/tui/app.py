"""`cogni chat RUN`: the chat pane (conversation, input box, status line) beside a sidebar of saved chats.

The app loads the model and keeps the list of chats; the open chat, with its reply stream and its actions, is
`tui/chat_pane.ChatPane`. Keys, palette commands and help come from one table, `tui/commands`. The model loads in
a thread worker that only posts a message; everything that touches widgets happens on the app's own thread.
Replies come from any `chat.session.ReplySource` (a run is a `chat.sources.LocalSource`, a server a
`chat.remote.RemoteSource`), which is how tests script a model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.message import Message as TextualMessage
from textual.screen import ModalScreen
from textual.widgets import Footer, Header

from cognimamba.chat.controller import ChatController
from cognimamba.chat.history import HistoryStore
from cognimamba.chat.session import ChatSession, ReplySource, settings_with
from cognimamba.chat.tools import ToolBox
from cognimamba.chat.tui.chat_pane import ChatPane
from cognimamba.chat.tui.commands import COMMANDS, ChatCommands, action_name, bindings, help_keys
from cognimamba.chat.tui.dialogs import AskScreen, ConfirmScreen, HelpScreen
from cognimamba.chat.tui.prompt_input import PromptInput
from cognimamba.chat.tui.run_picker import RunPickerScreen
from cognimamba.chat.tui.sidebar import Sidebar
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.runs.layout import find_runs

NEW_CHAT_TITLE = "New chat"
SIDEBAR_MIN_WIDTH = 100  # below this terminal width the chat list starts hidden (Ctrl+B shows it)
INSPECTED_ALTERNATIVES = 5  # the likeliest tokens the inspector lists for each position
SECOND_CTRL_C_SECONDS = 3.0  # a second Ctrl+C within this quits
QUIT_WAIT_SECONDS = 10.0  # how long quitting waits for a stopped reply to be saved

CHAT_ACTIONS = {action_name(command.action) for command in COMMANDS} | {"pane"}


@dataclass
class ModelLoaded(TextualMessage):
    source: ReplySource
    run_label: str | None = None  # a run opened from the app: the chat goes on with it


@dataclass
class ModelFailed(TextualMessage):
    error: str


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
    BINDINGS: ClassVar[list[BindingType]] = bindings()
    COMMANDS = App.COMMANDS | {ChatCommands}

    def __init__(self, load_source: Callable[[], ReplySource], history: HistoryStore, run_label: str = "",
                 tools: ToolBox | None = None, defaults: NewChatDefaults | None = None,
                 chat_id: int | None = None, open_run: Callable[[Path], ReplySource] | None = None,
                 runs_folder: Path | None = None) -> None:
        """`open_run` loads another run dir (the run picker lists those under `runs_folder`)."""
        super().__init__()
        self.load_source = load_source
        self.open_run_source = open_run
        self.runs_folder = runs_folder
        self.history = history
        self.run_label = run_label
        self.tools = tools or ToolBox()
        self.defaults = defaults or NewChatDefaults()
        self.load_error: str | None = None
        self.model_lock = threading.Lock()  # one reply at a time uses the model; a replaced one closes under it
        self._initial_chat = chat_id
        self._chat_filter = ""
        self._sidebar_auto = True  # follows the terminal width until the user toggles it
        self._last_interrupt = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            yield ChatPane(self.new_controller(GenerationConfig()), self.tools, self.model_lock, id="main")
        yield Footer()

    @property
    def chat_pane(self) -> ChatPane:
        return self.query_one(ChatPane)

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one(Sidebar)

    @property
    def chat(self) -> ChatController:
        return self.chat_pane.chat

    @property
    def session(self) -> ChatSession:
        return self.chat.session

    @property
    def chat_id(self) -> int | None:
        return self.chat.chat_id

    @property
    def source(self) -> ReplySource | None:
        return self.chat_pane.source

    def new_controller(self, run_defaults: GenerationConfig) -> ChatController:
        session = ChatSession(self.defaults.system_prompt, self.defaults.settings(run_defaults), self.tools)
        return ChatController(session, self.history, self.run_label, untitled=NEW_CHAT_TITLE)

    async def on_mount(self) -> None:
        self.fit_sidebar(self.size.width)
        if self._initial_chat is None or not await self.open_chat(self._initial_chat):
            await self.start_new_chat()
        self.chat_pane.prompt_input.focus()
        self.load_model()

    # ------------------------------------------------------------------------------------------- the model

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
        pane, source = self.chat_pane, message.source
        if pane.source is not None and pane.source is not source:
            self.close_source(pane.source)
        source.top_alternatives = INSPECTED_ALTERNATIVES  # a source that cannot say how likely a token was ignores it
        if message.run_label is not None:
            self.run_label = self.chat.run_label = message.run_label
            self.notify(f"Now talking to {message.run_label}; the chat goes on.")
        elif self.chat_id is None and not pane.settings_edited:
            self.session.settings = self.defaults.settings(source.defaults)
        pane.use_source(source)
        if source.notice:  # e.g. a --compile that fell back to eager decoding
            self.notify(source.notice, severity="warning", timeout=10)

    @work(thread=True, group="close", exit_on_error=False)
    def close_source(self, source: ReplySource) -> None:
        """A source replaced by another run's ends (a model process: its child exits) once no reply uses it."""
        with self.model_lock:
            source.close()

    def on_model_failed(self, message: ModelFailed) -> None:
        if self.source is not None:  # another run failed to open: this one stays
            self.chat_pane.status.state = "ready"
            self.notify(message.error, severity="error", timeout=15)
            return
        # The CLI checks the run before opening the app; what still fails here ends the app with the error.
        self.load_error = message.error
        self.exit(return_code=2)

    def action_open_run(self) -> None:
        if self.open_run_source is None or self.runs_folder is None:
            self.notify("This chat talks to a server; there are no runs to open.")
            return
        folder = self.runs_folder

        def done(run: Path | None) -> None:
            if run is None:
                return
            self.chat_pane.action_stop()
            self.chat_pane.status.state = f"loading {run.name}…"
            self.load_model(run)

        self.push_screen(RunPickerScreen(folder, find_runs(folder), self.run_label), done)

    # ------------------------------------------------------------------------------------------- the chats

    async def show_chat(self, chat: ChatController) -> None:
        await self.chat_pane.show_chat(chat)
        self.sub_title = chat.display_title
        await self.refresh_chats()

    async def start_new_chat(self) -> None:
        run_defaults = self.source.defaults if self.source is not None else GenerationConfig()
        await self.show_chat(self.new_controller(run_defaults))
        self.chat_pane.prompt_input.focus()

    async def open_chat(self, chat_id: int) -> bool:
        """Reopen a saved chat: its messages, system prompt and settings; False (and a notice) if it cannot be."""
        try:
            chat = ChatController.open(self.history, chat_id, self.tools, self.run_label, NEW_CHAT_TITLE)
        except CogniError as error:
            self.notify(str(error), severity="error")
            return False
        await self.show_chat(chat)
        return True

    async def refresh_chats(self) -> None:
        records = self.history.search_chats(self._chat_filter) if self._chat_filter else self.history.list_chats()
        await self.sidebar.show_chats(records, self.chat_id)

    @on(ChatPane.ChatChanged)
    async def chat_changed(self) -> None:
        self.sub_title = self.chat.display_title
        await self.refresh_chats()

    @on(Sidebar.ChatChosen)
    async def chat_chosen(self, message: Sidebar.ChatChosen) -> None:
        if message.chat_id != self.chat_id:
            await self.open_chat(message.chat_id)
        self.chat_pane.prompt_input.focus()

    @on(Sidebar.NewChatPressed)
    async def action_new_chat(self) -> None:
        await self.start_new_chat()

    @on(Sidebar.SearchChanged)
    async def search_changed(self, message: Sidebar.SearchChanged) -> None:
        self._chat_filter = message.query.strip()
        await self.refresh_chats()

    def action_rename_chat(self) -> None:
        highlighted = self.sidebar.highlighted()
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
            await self.chat_changed()

        self.push_screen(AskScreen("New title for this chat", str(self.sub_title)), done)

    def action_delete_chat(self) -> None:
        highlighted = self.sidebar.highlighted()
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
                self.chat_pane.action_stop()
                self.chat.delete()
                self.notify(f"Deleted “{self.sub_title}”.")
                await self.start_new_chat()

        self.push_screen(ConfirmScreen(f"Delete “{self.sub_title}” and all its messages?"), done)

    # ------------------------------------------------------------------------------------------- layout

    def on_resize(self, event: events.Resize) -> None:
        self.fit_sidebar(event.size.width)

    def fit_sidebar(self, width: int) -> None:
        """The chat list takes a quarter of a narrow terminal's width: hide it there until asked for."""
        if self._sidebar_auto:
            self.sidebar.display = width >= SIDEBAR_MIN_WIDTH

    def action_toggle_sidebar(self) -> None:
        self._sidebar_auto = False
        self.sidebar.display = not self.sidebar.display

    def action_focus_chats(self) -> None:
        self.sidebar.display = True
        self.sidebar.focus_list()

    def action_search_chats(self) -> None:
        self.sidebar.display = True
        self.sidebar.focus_search()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_keys()))

    # ------------------------------------------------------------------------------------------- keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Chat actions wait while a dialog is open (the dialog has the keys)."""
        return not (action in CHAT_ACTIONS and isinstance(self.screen, ModalScreen))

    async def action_pane(self, action: str) -> None:
        """A chat pane command: its keys are the app's, so they work wherever the focus is (the chat list too)."""
        await self.run_action(action, self.chat_pane)

    async def action_interrupt(self) -> None:
        """Ctrl+C: stop the reply; with none streaming, copy a selection, or quit when pressed twice."""
        now = time.monotonic()
        if self.chat_pane.generating:
            self.chat_pane.action_stop()
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
        await self.chat_pane.stop_for_exit(QUIT_WAIT_SECONDS)
        self.exit()
