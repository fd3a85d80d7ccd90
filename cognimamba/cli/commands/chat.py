"""`cogni chat RUN`: talk to a trained model (full-screen app, `--plain` line mode, or one `--prompt`)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cognimamba.cli.commands.common import JsonOption
from cognimamba.errors import CogniError

if TYPE_CHECKING:  # imported by the command itself, so `cogni --help` stays fast
    from cognimamba.chat.history import HistoryStore
    from cognimamba.chat.options import ChatOptions
    from cognimamba.chat.session import ChatSession, ReplySource
    from cognimamba.chat.tools import ToolBox


def chat_command(
    run: Annotated[Path | None, typer.Argument(help="run dir (from `cogni train` or `cogni quickstart`); not with --url")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="send one message, stream the reply to stdout and "
                                               "exit; '-' reads the message from stdin")] = None,
    system: Annotated[str | None, typer.Option("--system", help="system prompt (for new chats)")] = None,
    plain: Annotated[bool, typer.Option("--plain", help="line-mode chat instead of the full-screen app")] = False,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="reply length limit; default: the run's")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="0 = greedy (deterministic); default: the run's")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="sample from the k likeliest tokens; 0 = off; default: the run's")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="nucleus sampling mass; 1 = off; default: the run's")] = None,
    repetition_penalty: Annotated[float | None, typer.Option("--repetition-penalty", help="1 = off; default: the run's")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="sampling seed for reproducible replies; default: the run's")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="with --prompt: end the reply at this text "
                                                           "(repeatable)")] = None,
    tools_file: Annotated[Path | None, typer.Option("--tools", help="JSON file of tool definitions to show the "
                                                    "model (never executed)")] = None,
    enable_tools: Annotated[bool, typer.Option("--enable-tools", help="run the built-in calculator and clock "
                                               "when the model calls them")] = False,
    history_db: Annotated[Path | None, typer.Option("--history-db", help="chat history file (default: in the "
                                                    "per-user data dir)")] = None,
    chat_id: Annotated[int | None, typer.Option("--chat", help="reopen saved chat N (see /history)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps")] = "auto",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for reading the prompt and "
                                                "for decoding; default: PyTorch's for the prompt, and for "
                                                "decoding one per 32 MB of weights")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="fp32, bf16 (weights only on CPUs without native "
                                                "bf16) or int8 (needs torchao); default: the run's inference.weights")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the decoding step: faster tokens "
                                          "(about 2x for small models on CPU) after a compile of 5-20 s at "
                                          "load")] = False,
    in_process: Annotated[bool, typer.Option("--in-process", help="full-screen app: decode in the app's own "
                                             "process instead of a separate one (slower replies; for "
                                             "debugging)")] = False,
    as_json: JsonOption = False,
    url: Annotated[str | None, typer.Option("--url", help="chat with the model of an OpenAI-compatible server instead of a run, e.g. http://127.0.0.1:8000/v1 (`cogni serve`, llama-server, Ollama)")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="with --url: the server's API key")] = None,
    model: Annotated[str | None, typer.Option("--model", help="with --url: the model id (default: the server's first)")] = None,
) -> None:
    """Chat with a trained model: a full-screen app by default, `--plain` for line mode, `--prompt` for scripts."""
    from cognimamba.chat.options import ChatOptions, SourceOptions

    settings = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                "repetition_penalty": repetition_penalty, "seed": seed}
    options = ChatOptions(
        SourceOptions(run, url, api_key, model, device, compile, weights, threads), prompt=prompt,
        system=system or "", plain=plain, as_json=as_json,
        settings={name: value for name, value in settings.items() if value is not None}, stop=tuple(stop or ()),
        tools_file=tools_file, enable_tools=enable_tools, history_db=history_db, chat_id=chat_id,
        in_process=in_process)
    try:
        run_chat(options)
    except CogniError as error:
        if not (as_json and prompt is not None):
            raise
        sys.stdout.write(json.dumps({"error": str(error)}, ensure_ascii=False) + "\n")  # scripts read stdout
        raise typer.Exit(error.exit_code) from None


def run_chat(options: ChatOptions) -> None:
    """Check the options, then answer one --prompt, or chat in lines or full screen (kept in the history)."""
    options.check()  # a wrong option or RUN is one clear line before the model loads or the app takes the screen
    tools = options.tools()
    from cognimamba.chat.history import HistoryStore  # these import torch: only once the options are good
    from cognimamba.chat.plain import answer_prompt
    from cognimamba.chat.sources import open_source

    if options.prompt is not None:
        text = options.message(sys.stdin)
        source = _report(open_source(options.source))
        answer_prompt(new_session(options, source, tools, stop=True), source, text, options.as_json)
        return
    plain = options.plain
    if not plain and not (sys.stdin.isatty() and sys.stdout.isatty()):
        # A full-screen app needs a terminal on both ends; piped or redirected, line mode is what works.
        sys.stderr.write("not a terminal: using the line-mode chat (--plain)\n")
        plain = True
    history = HistoryStore(options.history_db)
    if history.notice:
        sys.stderr.write(history.notice + "\n")
    try:
        if options.chat_id is not None:
            history.get_chat(options.chat_id)  # a wrong --chat fails before loading
        if plain:
            _line_chat(options, _report(open_source(options.source)), history, tools)
        else:
            _full_screen(options, history, tools)
    finally:
        history.close()


def new_session(options: ChatOptions, source: ReplySource, tools: ToolBox, stop: bool = False) -> ChatSession:
    """A new chat with the options' system prompt and settings over the source's defaults (--stop: `stop`)."""
    from cognimamba.chat.session import ChatSession, settings_with

    settings = settings_with(source.defaults, options.settings, "option")
    return ChatSession(options.system, settings, tools, stop=list(options.stop) if stop else None)


def _report(source: ReplySource) -> ReplySource:
    if source.notice:  # e.g. a --compile that fell back to eager decoding
        sys.stderr.write(source.notice + "\n")
    return source


def _line_chat(options: ChatOptions, source: ReplySource, history: HistoryStore, tools: ToolBox) -> None:
    from cognimamba.chat.controller import ChatController
    from cognimamba.chat.plain import LineChat

    label = options.source.label
    if options.chat_id is None:
        chat = ChatController(new_session(options, source, tools), history, label)
    else:
        chat = ChatController.open(history, options.chat_id, tools, label)
    read_line = input if sys.stdin.isatty() else _read_piped_line
    try:
        LineChat(source, chat, read_line).run()
    finally:
        source.close()


def _read_piped_line(prompt: str) -> str:
    """Like input(), without echoing the prompt: piped chats print only replies."""
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _full_screen(options: ChatOptions, history: HistoryStore, tools: ToolBox) -> None:
    from cognimamba.chat.sources import open_source
    from cognimamba.chat.tui.app import ChatApp, NewChatDefaults

    # The app decodes a run in a child process, so drawing never slows decoding (chat/sources.open_source);
    # it shows the load notice itself (stderr is under the full screen).
    separate = not options.in_process
    opened: list[ReplySource] = []

    def load(run: Path | None = None) -> ReplySource:  # this run, or the one the run picker chose
        opened.append(open_source(options.source if run is None else
                                  dataclasses.replace(options.source, run=run), separate))
        return opened[-1]

    run = options.source.run
    app = ChatApp(load, history, run_label=options.source.label, tools=tools,
                  defaults=NewChatDefaults(options.system, options.settings), chat_id=options.chat_id,
                  open_run=load if run else None, runs_folder=run.resolve().parent if run else None)  # its neighbours
    try:
        app.run()
    finally:
        for source in opened:  # model processes end with the app (closing one the app replaced is safe)
            source.close()
    if app.load_error:
        raise CogniError(app.load_error)
