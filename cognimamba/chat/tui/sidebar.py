"""The list of saved chats, searchable by title and messages; selecting one reopens it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, ListItem, ListView

from cognimamba.chat.history import ChatRecord


def chat_when(record: ChatRecord, now: float | None = None) -> str:
    """When a chat was last active: '14:05' today, 'Mar 03 14:05' before, with its message count."""
    now = time.time() if now is None else now
    local, today = time.localtime(record.updated_at), time.localtime(now)
    same_day = local[:3] == today[:3]
    stamp = time.strftime("%H:%M" if same_day else "%b %d %H:%M", local)
    count = record.message_count
    return f"{stamp} · {count} message{'s' if count != 1 else ''}"


class ChatItem(ListItem):
    """A chat's title, and under it when it was active: titles alone repeat ("Once upon a time" ×4)."""

    def __init__(self, record: ChatRecord) -> None:
        super().__init__(Label(record.title, markup=False, classes="chat-title"),
                         Label(chat_when(record), markup=False, classes="chat-when"))
        self.chat_id = record.id
        self.title = record.title


class Sidebar(Vertical):
    """Past chats, newest first, with a search box and a button for a new one."""

    @dataclass
    class ChatChosen(Message):
        chat_id: int

    @dataclass
    class NewChatPressed(Message):
        pass

    @dataclass
    class SearchChanged(Message):
        query: str

    def compose(self) -> ComposeResult:
        new_chat = Button("+ New chat", id="new-chat", compact=True)
        new_chat.can_focus = False  # Tab from the message box goes straight to the list; Ctrl+N is the key
        yield new_chat
        yield Input(placeholder="search chats (Ctrl+F)", id="chat-search", compact=True)
        yield ListView(id="chat-list")

    @property
    def chat_list(self) -> ListView:
        return self.query_one("#chat-list", ListView)

    async def show_chats(self, records: list[ChatRecord], current: int | None) -> None:
        chat_list = self.chat_list
        await chat_list.clear()
        await chat_list.extend(ChatItem(record) for record in records)
        ids = [record.id for record in records]
        chat_list.index = ids.index(current) if current in ids else None

    def highlighted(self) -> ChatItem | None:
        """The chat under the list's cursor while the list has the focus (what chat actions then apply to)."""
        item = self.chat_list.highlighted_child
        return item if self.chat_list.has_focus and isinstance(item, ChatItem) else None

    def focus_list(self) -> None:
        chat_list = self.chat_list
        if chat_list.index is None and chat_list.children:
            chat_list.index = 0
        chat_list.focus()

    def focus_search(self) -> None:
        self.query_one("#chat-search", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.NewChatPressed())

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_list()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ChatItem):
            self.post_message(self.ChatChosen(event.item.chat_id))
