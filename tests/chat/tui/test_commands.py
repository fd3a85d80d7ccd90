"""The one table of chat commands: each key bound once to a real action; help, palette and welcome text from it."""

from __future__ import annotations

import dataclasses

from cognimamba.chat.tui import commands
from cognimamba.chat.tui.app import ChatApp
from cognimamba.chat.tui.chat_pane import ChatPane
from cognimamba.chat.tui.commands import COMMANDS, action_name, help_keys, key_name, welcome_text


def test_every_command_names_an_action_of_the_app_or_the_pane():
    for command in COMMANDS:
        owner = ChatPane if command.pane else ChatApp
        assert callable(getattr(owner, f"action_{action_name(command.action)}", None)), command


def test_no_key_is_bound_twice():
    keys = [command.key for command in COMMANDS] + [key for key, _ in commands.INPUT_KEYS]
    assert len(keys) == len(set(keys))


def test_the_app_binds_every_command_with_its_help_as_the_tooltip():
    bound = {binding.key: binding for binding in ChatApp.BINDINGS}
    assert set(bound) == {command.key for command in COMMANDS}
    assert bound["f5"].action == "pane('regenerate')" and bound["f5"].priority
    assert bound["f5"].tooltip.startswith("Answer the last message again")
    assert bound["ctrl+n"].action == "new_chat" and bound["ctrl+n"].description == "New"


def test_help_lists_every_command_then_the_message_box_keys():
    keys = help_keys()
    assert keys[:len(COMMANDS)] == [(command.key, command.title) for command in COMMANDS]
    assert dict(keys)["f10"] == "Token inspector" and keys[-1][0] == "tab / shift+tab"


def test_the_welcome_text_takes_its_keys_from_the_table(monkeypatch):
    text = welcome_text()
    assert text.startswith("Type a message and press Enter. The reply streams in; Esc or Ctrl+C stops it.")
    assert "F6 edits your last message" in text and text.endswith("Ctrl+T tools · F1 all keys")
    moved = [dataclasses.replace(c, key="f12") if c.action == "edit_last" else c for c in COMMANDS]
    monkeypatch.setattr(commands, "COMMANDS", tuple(moved))
    assert "F12 edits your last message" in welcome_text()


def test_key_names_as_the_welcome_text_writes_them():
    assert [key_name(key) for key in ("escape", "ctrl+t", "f10", "alt+left")] == ["Esc", "Ctrl+T", "F10", "Alt+Left"]
