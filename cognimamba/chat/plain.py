"""`cogni chat RUN --plain` and `--prompt`: chat in plain text lines, for pipes, SSH and simple consoles.

Both drive a `ChatController` like the TUI does; the line chat keeps its chats in the same history store,
`--prompt` keeps nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cognimamba.chat.controller import ChatController
from cognimamba.chat.format import ToolCall
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
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import TOOL_CALL

HELP = """commands:
  /system [TEXT]     show the system prompt, or set it (/system - removes it)
  /set NAME VALUE    change a setting: temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed
  /tools [on|off]    list the tools; run the built-in calculator and clock when called (off by default)
  /clear             remove this chat's messages (keeps its system prompt and settings)
  /new               start a new chat
  /history [N]       list saved chats, or reopen chat N
  /save [FILE]       export this chat to Markdown
  /quit              leave (Ctrl+D too); Ctrl+C stops a reply
  \"\"\"                 start or end a multi-line message"""


@dataclass
class ReplyPrinter:
    """Prints a reply's events as text: the reply as it streams, tool calls and notes on their own lines."""

    out: IO[str]
    notes: IO[str]
    finished: list[ReplyFinished] = field(default_factory=list)
    tool_runs: list[ToolRan] = field(default_factory=list)
    _raw: str = ""
    _shown: int = 0

    def handle(self, event: ChatEvent) -> None:
        if isinstance(event, ContextTrimmed):
            self.note(event.describe())
        elif isinstance(event, ReplyStarted):
            self._raw, self._shown = "", 0
        elif isinstance(event, TextDelta):
            self._raw += event.text
            visible = self._raw.split(TOOL_CALL, 1)[0]  # a tool call is printed once it is complete
            self.out.write(visible[self._shown:])
            self.out.flush()
            self._shown = len(visible)
        elif isinstance(event, ReplyFinished):
            self.finished.append(event)
            self.out.write("\n")
            message = event.message
            for call in message.tool_calls:
                self.note(f"tool call {call.name} {json.dumps(call.arguments, ensure_ascii=False)}")
            for problem, raw in zip(message.meta.get("problems", []), message.meta.get("raw_calls", []), strict=False):
                self.note(f"warning: malformed tool call ({problem}): {raw}")
            self.note(self.stats_line(event))
        elif isinstance(event, ToolRan):
            self.tool_runs.append(event)
            self.note(f"tool result {event.call.name}: {event.result.content}")
        elif isinstance(event, ToolSkipped):
            self.note(f"tool {event.call.name} not run: {event.reason}")

    def note(self, text: str) -> None:
        self.notes.write(f"[{text}]\n")
        self.notes.flush()

    @staticmethod
    def stats_line(event: ReplyFinished) -> str:
        stats = event.stats
        parts = [f"{stats.generated_tokens} tokens", f"{stats.tokens_per_second:.1f} tok/s",
                 f"first token {stats.time_to_first_token:.2f} s",
                 f"context {event.context_used}/{event.context_length}"]
        if stats.stop_reason in ("cancelled", "max_new_tokens", "context"):
            parts.append({"cancelled": "stopped", "max_new_tokens": "hit max tokens",
                          "context": "hit the context limit"}[stats.stop_reason])
        return " · ".join(parts)


@contextlib.contextmanager
def ctrl_c_cancels(cancel: threading.Event) -> Iterator[None]:
    """While a reply streams, Ctrl+C stops it cleanly (the partial reply is kept) instead of killing the chat."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def reply_once(chat: ChatController, text: str, source: ReplySource, printer: ReplyPrinter) -> None:
    """Send one message and print the reply's events (Ctrl+C stops the reply)."""
    cancel = threading.Event()
    with ctrl_c_cancels(cancel):
        for event in chat.send(text, source, cancel):
            printer.handle(event)


def answer_prompt(session: ChatSession, source: ReplySource, text: str, as_json: bool = False,
                  out: IO[str] = sys.stdout, notes: IO[str] = sys.stderr) -> None:
    """`--prompt`: answer one message and print the reply (with `as_json`, only the `prompt_json` object).
    Nothing is saved: scripts leave no history."""
    quiet = io.StringIO()
    printer = ReplyPrinter(quiet, quiet) if as_json else ReplyPrinter(out, notes)
    reply_once(ChatController(session), text, source, printer)
    if as_json:
        out.write(json.dumps(prompt_json(printer), ensure_ascii=False) + "\n")


def prompt_json(printer: ReplyPrinter) -> dict[str, Any]:
    """The `--json` object: the final reply and its numbers; `tool_calls` lists {name, arguments, result} in the
    order they ran (`tool_results` keeps the raw results for older scripts)."""
    last = printer.finished[-1]
    payload: dict[str, Any] = {
        "text": last.message.content,
        "prompt_tokens": last.stats.prompt_tokens,
        "generated_tokens": last.stats.generated_tokens,
        "time_to_first_token": round(last.stats.time_to_first_token, 6),
        "tokens_per_second": round(last.stats.tokens_per_second, 3),
        "stop_reason": last.stats.stop_reason,
    }
    calls = [call for finished in printer.finished for call in finished.message.tool_calls]
    payload["tool_calls"] = _call_records(calls, printer.tool_runs)
    if calls:
        payload["tool_results"] = [{"name": run.call.name, "ok": run.result.ok, "content": run.result.content}
                                   for run in printer.tool_runs]
    return payload


def _call_records(calls: list[ToolCall], runs: list[ToolRan]) -> list[dict[str, Any]]:
    """Each call as scripts read it: `result` is what the tool returned (parsed JSON), None when it did not run.
    Calls run in the order the model made them, so the runs pair with the calls in one pass."""
    records, pending = [], list(runs)
    for call in calls:
        result: Any = None
        if pending and pending[0].call == call:
            content = pending.pop(0).result.content
            try:
                result = json.loads(content)
            except json.JSONDecodeError:
                result = content
        records.append({"name": call.name, "arguments": call.arguments, "result": result})
    return records


class LineChat:
    """The interactive line-mode chat: read a line, stream the reply; `chat` saves both."""

    def __init__(self, source: ReplySource, chat: ChatController, read_line: Callable[[str], str],
                 out: IO[str] = sys.stdout, notes: IO[str] = sys.stderr) -> None:
        assert chat.history is not None, "the line chat keeps its chats; --prompt is the one without history"
        self.source, self.chat, self.history = source, chat, chat.history
        self.read_line, self.out, self.notes = read_line, out, notes
        self.new_chat_template = (chat.session.system_prompt, dataclasses.replace(chat.session.settings))

    @property
    def session(self) -> ChatSession:
        return self.chat.session

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self) -> None:
        self.say(f"{self.source.name} · context {self.source.context_length} tokens · "
                 f"{describe_settings(self.session.settings)} · /help for commands, /quit to leave")
        if self.chat.chat_id is not None:
            self.show_chat()
        while True:
            try:
                line = self.read_message()
            except EOFError:
                break
            except KeyboardInterrupt:
                self.say("\n(/quit or Ctrl+D leaves)")
                continue
            if line is None:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    break
            elif line.strip():
                self.send(line.strip())

    def read_message(self) -> str | None:
        first = self.read_line(">>> ")
        if first.strip() != '"""':
            return first
        lines = []
        while (line := self.read_line("... ")).strip() != '"""':
            lines.append(line)
        return "\n".join(lines)

    def send(self, text: str) -> None:
        try:
            reply_once(self.chat, text, self.source, ReplyPrinter(self.out, self.notes))
        except CogniError as error:
            self.printer_error(str(error))

    def printer_error(self, text: str) -> None:
        self.notes.write(f"error: {text}\n")
        self.notes.flush()

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/quit", "/exit", "/bye"):
            return False
        handlers: dict[str, Callable[[str], None]] = {
            "/help": lambda _: self.say(HELP), "/system": self.set_system, "/set": self.set_setting,
            "/tools": self.set_tools, "/clear": self.clear, "/new": self.new_chat, "/history": self.show_history,
            "/save": self.save,
        }
        handler = handlers.get(name)
        if handler is None:
            self.printer_error(f"unknown command {name}; /help lists them")
            return True
        try:
            handler(argument)
        except CogniError as error:
            self.printer_error(str(error))
        return True

    def set_system(self, text: str) -> None:
        if not text:
            self.say(f"system prompt: {self.session.system_prompt or '(none)'}")
            return
        self.chat.set_system_prompt("" if text == "-" else text)
        self.say("system prompt removed" if text == "-" else "system prompt set")

    def set_setting(self, argument: str) -> None:
        name, _, value = argument.partition(" ")
        if not value:
            self.say(describe_settings(self.session.settings))
            return
        self.chat.set_settings(settings_with(self.session.settings, {name.replace("-", "_"): value.strip()}, "/set"))
        self.say(describe_settings(self.session.settings))

    def set_tools(self, argument: str) -> None:
        tools = self.session.tools
        if not argument:
            for tool in [*tools.builtins.values(), *tools.user_tools]:
                kind = "from --tools, never executed" if tool.run is None else "built in"
                self.say(f"{tool.name} ({kind}): {tool.definition['function'].get('description', '')}")
            self.say(f"tool execution {'on' if tools.enabled else 'off'}")
            return
        if argument not in ("on", "off"):
            raise CogniError("/tools: say /tools on or /tools off")
        self.session.tools.enabled = argument == "on"
        self.say(f"tool execution {argument}")

    def clear(self, _: str) -> None:
        self.chat.clear()
        self.say("chat cleared")

    def new_chat(self, _: str) -> None:
        system_prompt, settings = self.new_chat_template
        session = ChatSession(system_prompt, dataclasses.replace(settings), self.session.tools)
        self.chat = ChatController(session, self.history, self.chat.run_label)
        self.say("new chat")

    def show_history(self, argument: str) -> None:
        if argument:
            if not argument.isdigit():
                raise CogniError("/history: give a chat number from the list, e.g. /history 3")
            self.chat = ChatController.open(self.history, int(argument), self.session.tools, self.chat.run_label)
            self.show_chat()
            return
        chats = self.history.list_chats()
        if not chats:
            self.say("no saved chats yet")
        for record in chats:
            marker = "*" if record.id == self.chat.chat_id else " "
            count = record.message_count
            self.say(f"{marker}{record.id:4d}  {record.title}  ({count} message{'s' if count != 1 else ''})")

    def show_chat(self) -> None:
        self.say(f"--- chat {self.chat.chat_id}: {self.chat.title} ---")
        if self.session.system_prompt:
            self.say(f"[system] {self.session.system_prompt}")
        for message in self.session.messages:
            label = message.role if message.role != "tool" else f"tool {message.meta.get('name', '')}".strip()
            text = message.content + "".join(f"\n  (tool call {call.to_json()})" for call in message.tool_calls)
            self.say(f"[{label}] {text}")

    def save(self, argument: str) -> None:
        if not self.session.messages:
            raise CogniError("/save: this chat has no messages yet")
        self.say(f"saved to {self.chat.export(Path(argument or self.chat.export_name()))}")
