"""The list of saved chats; selecting one reopens it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Button, Label, ListItem, ListView

from cognimamba.chat.history import ChatRecord


class ChatItem(ListItem):
    def __init__(self, record: ChatRecord) -> None:
        super().__init__(Label(record.title, markup=False))
        self.chat_id = record.id


class Sidebar(Vertical):
    """Past chats, newest first, with a button for a new one."""

    @dataclass
    class ChatChosen(Message):
        chat_id: int

    @dataclass
    class NewChatPressed(Message):
        pass

    def compose(self) -> ComposeResult:
        new_chat = Button("+ New chat", id="new-chat", compact=True)
        new_chat.can_focus = False  # Tab from the message box goes straight to the list; Ctrl+N is the key
        yield new_chat
        yield ListView(id="chat-list")

    async def show_chats(self, records: list[ChatRecord], current: int | None) -> None:
        chat_list = self.query_one("#chat-list", ListView)
        await chat_list.clear()
        await chat_list.extend(ChatItem(record) for record in records)
        ids = [record.id for record in records]
        chat_list.index = ids.index(current) if current in ids else None

    def focus_list(self) -> None:
        chat_list = self.query_one("#chat-list", ListView)
        if chat_list.index is None and chat_list.children:
            chat_list.index = 0
        chat_list.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(self.NewChatPressed())

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ChatItem):
            self.post_message(self.ChatChosen(event.item.chat_id))
