"""Every chat command in one table: its key, footer label, palette title and help, which also make the welcome text.

The app's key bindings, the help screen (F1), the command palette (Ctrl+P, a `Provider` as Posting's) and the
welcome text of an empty chat all read `COMMANDS`, so a key changed here changes wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class Command:
    action: str  # with its argument where it takes one: "select_reply(-1)"
    key: str
    label: str  # in the footer
    title: str  # in the palette and on the help screen
    help: str  # under the title in the palette, and the key's tooltip in the footer
    show: bool = True  # in the footer
    priority: bool = False  # ahead of the focused widget: the message box would take F5 as text
    pane: bool = False  # the chat pane's action (one chat's replies and settings); the others are the app's

    @property
    def app_action(self) -> str:
        """The action as the app runs it: keys work wherever the focus is, so pane actions go through the app."""
        return f"pane({self.action!r})" if self.pane else self.action

    def binding(self) -> Binding:
        return Binding(self.key, self.app_action, self.label, show=self.show, priority=self.priority,
                       tooltip=self.help)


COMMANDS: tuple[Command, ...] = (
    Command("stop", "escape", "Stop", "Stop reply", "Stop the reply being generated", pane=True),
    Command("interrupt", "ctrl+c", "Stop / quit", "Stop, or quit", "Stop the reply; with none, a second Ctrl+C quits",
            show=False, priority=True),
    Command("regenerate", "f5", "Retry", "Regenerate reply",
            "Answer the last message again; the earlier answer stays (Alt+←/→)", priority=True, pane=True),
    Command("edit_last", "f6", "Edit", "Edit last message",
            "Take your last message back into the box to edit and resend", priority=True, pane=True),
    Command("copy_reply", "f7", "Copy", "Copy reply", "Copy the selected (or last) reply to the clipboard",
            priority=True, pane=True),
    Command("copy_code", "alt+c", "Copy code", "Copy code block",
            "Copy the last code block of the selected (or last) reply", show=False, pane=True),
    Command("select_reply(-1)", "alt+up", "Previous reply", "Select previous reply",
            "Copy, inspect and versions act on the selected reply", show=False, pane=True),
    Command("select_reply(1)", "alt+down", "Next reply", "Select next reply",
            "Copy, inspect and versions act on the selected reply", show=False, pane=True),
    Command("reply_version(-1)", "alt+left", "Earlier version", "Earlier reply version",
            "Show the answer before a regenerate", show=False, pane=True),
    Command("reply_version(1)", "alt+right", "Later version", "Later reply version",
            "Show the answer after a regenerate", show=False, pane=True),
    Command("inspect", "f10", "Inspect", "Token inspector",
            "The selected reply token by token: probabilities, alternatives, prompt", show=False, pane=True),
    Command("open_run", "ctrl+r", "Open run", "Open another run",
            "Pick a run dir near this one; the chat goes on with it", show=False),
    Command("search_chats", "ctrl+f", "Search chats", "Search chats", "Filter the chat list by title and message text",
            show=False),
    Command("help", "f1", "Help", "Help", "Key bindings"),
    Command("new_chat", "ctrl+n", "New", "New chat", "Start an empty chat (the current one stays in the sidebar)"),
    Command("focus_chats", "ctrl+o", "Chats", "Open a saved chat", "Move to the list of saved chats (Enter opens one)"),
    Command("rename_chat", "f2", "Rename", "Rename chat", "Give the current chat another title", show=False),
    Command("edit_system_prompt", "f3", "System", "Edit system prompt", "The system prompt of the current chat",
            pane=True),
    Command("edit_settings", "f4", "Settings", "Generation settings",
            "Temperature, top-k, top-p, max tokens of the current chat", pane=True),
    Command("toggle_tools", "ctrl+t", "Tools", "Toggle tool execution",
            "Run the built-in calculator and clock when the model asks", pane=True),
    Command("show_tools", "f9", "Tool list", "Show tools",
            "The built-in tools and the --tools definitions the model is told about", show=False, pane=True),
    Command("export_chat", "ctrl+s", "Export", "Export chat to Markdown", "Write the current chat to a .md file",
            show=False, pane=True),
    Command("clear_chat", "ctrl+l", "Clear chat", "Clear chat",
            "Remove all messages of the current chat, keep its settings", show=False, pane=True),
    Command("delete_chat", "f8", "Delete chat", "Delete chat", "Delete the current chat from the history", show=False),
    Command("toggle_sidebar", "ctrl+b", "Sidebar", "Toggle chat list", "Show or hide the sidebar of saved chats",
            show=False),
)

# Keys the message box and Textual handle themselves, listed on the help screen after the commands.
INPUT_KEYS: tuple[tuple[str, str], ...] = (
    ("enter", "send the message"),
    ("up / down", "recall earlier messages (on the first / last line)"),
    ("shift+enter, ctrl+j", "new line in the message"),
    ("ctrl+p", "command palette (every action)"),
    ("ctrl+q", "quit"),
    ("tab / shift+tab", "move between the chat list and the message box"),
)

# What an empty chat says; each {action} is that command's key.
WELCOME = (
    "Type a message and press Enter. The reply streams in; {stop} or {interrupt} stops it.\n\n"
    "Up recalls earlier messages · {edit_last} edits your last message · {regenerate} answers again · "
    "{copy_reply} copies the reply\n"
    "{inspect} shows the reply token by token · {edit_system_prompt} system prompt · {edit_settings} settings · "
    "{toggle_tools} tools · {help} all keys"
)

KEY_NAMES = {"escape": "Esc"}


def key_name(key: str) -> str:
    """A key as the welcome text writes it: "ctrl+t" is Ctrl+T, "f5" F5, "escape" Esc."""
    return "+".join(KEY_NAMES.get(part, part.capitalize()) for part in key.split("+"))


def welcome_text() -> str:
    return WELCOME.format_map({command.action: key_name(command.key) for command in COMMANDS})


def bindings() -> list[Binding]:
    return [command.binding() for command in COMMANDS]


def help_keys() -> list[tuple[str, str]]:
    """(key, what it does) for the help screen: every command, then the message box's own keys."""
    return [(command.key.replace(",", ", "), command.title) for command in COMMANDS] + list(INPUT_KEYS)


def action_name(action: str) -> str:
    """An action without its argument: "select_reply(-1)" is select_reply."""
    return action.split("(", 1)[0]


class ChatCommands(Provider):
    """The table's commands in the command palette, beside Textual's own (theme, keys, quit)."""

    def runner(self, command: Command) -> Callable[[], Any]:
        return partial(self.app.run_action, command.app_action)

    async def discover(self) -> Hits:
        for command in sorted(COMMANDS, key=lambda command: command.title):
            yield DiscoveryHit(command.title, self.runner(command), help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in COMMANDS:
            if (score := matcher.match(command.title)) > 0:
                yield Hit(score, matcher.highlight(command.title), self.runner(command), help=command.help)
