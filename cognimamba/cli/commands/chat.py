"""`cogni chat RUN`: talk to a trained model (full-screen app, `--plain` line mode, or one `--prompt`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from cognimamba.cli.commands.common import JsonOption
from cognimamba.errors import CogniError
from cognimamba.runs.layout import check_run_path


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
    weights: Annotated[str | None, typer.Option("--weights", help="fp32, bf16 (CPUs with native bf16) or int8 "
                                                "(needs torchao); default: the run's inference.weights")] = None,
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
    try:
        _chat(run, prompt, system, plain, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop,
              tools_file, enable_tools, history_db, chat_id, device, threads, compile, weights, as_json, url, api_key,
              model, in_process)
    except CogniError as error:
        if not (as_json and prompt is not None):
            raise
        sys.stdout.write(json.dumps({"error": str(error)}, ensure_ascii=False) + "\n")  # scripts read stdout
        raise typer.Exit(error.exit_code) from None


def _chat(run: Path | None, prompt: str | None, system: str | None, plain: bool, max_new_tokens: int | None,
          temperature: float | None, top_k: int | None, top_p: float | None, repetition_penalty: float | None,
          seed: int | None, stop: list[str] | None, tools_file: Path | None, enable_tools: bool,
          history_db: Path | None, chat_id: int | None, device: str, threads: int | None, compile: bool,
          weights: str | None, as_json: bool, url: str | None, api_key: str | None, model: str | None,
          in_process: bool = False) -> None:
    if run is not None and url is None:
        check_run_path(run)  # a wrong path is told before torch loads
    from cognimamba.chat.session import ChatSession, settings_with
    from cognimamba.chat.tools import ToolBox, load_tool_definitions
    from cognimamba.config.schema import GenerationConfig

    overrides: dict[str, Any] = {name: value for name, value in {
        "max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
        "repetition_penalty": repetition_penalty, "seed": seed}.items() if value is not None}
    for name, value in overrides.items():  # bad values fail here, before anything loads
        try:
            settings_with(GenerationConfig(), {name: value})
        except CogniError as error:
            option = "--" + name.replace("_", "-")
            raise CogniError(str(error).replace(f"settings: generation.{name}", option)
                             .replace(f"generation.{name}", option)) from None
    tools = ToolBox(load_tool_definitions(tools_file) if tools_file else [], enabled=enable_tools)
    if as_json and prompt is None:
        raise CogniError("--json needs --prompt (it describes one reply)")
    if prompt is not None and plain:
        raise CogniError("--prompt and --plain do not go together; --prompt answers one message and exits")

    if (url is None) == (run is None):
        raise CogniError("give either a RUN dir or --url of an OpenAI-compatible server")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if url is not None:
        label = url
        connect = partial(_connect_remote, url, api_key, model)
    else:
        label = str(run)
        check_run(run)  # a wrong RUN is one clear line before the model loads or the app takes the screen
        connect = partial(_load_model, run, device, compile, weights=weights, threads=threads)
    if prompt is not None:
        text = sys.stdin.read() if prompt == "-" else prompt
        if not text.strip():
            raise CogniError("--prompt: the message is empty")
        source = connect()
        session = ChatSession(system or "", settings_with(source.defaults, overrides, "option"), tools,
                              stop=stop)
        _answer_once(session, source, text.strip(), as_json)
        return

    if not plain and not (sys.stdin.isatty() and sys.stdout.isatty()):
        # A full-screen app needs a terminal on both ends; piped or redirected, line mode is what works.
        sys.stderr.write("not a terminal: using the line-mode chat (--plain)\n")
        plain = True
    from cognimamba.chat.history import HistoryStore

    history = HistoryStore(history_db)
    if history.notice:
        sys.stderr.write(history.notice + "\n")
    try:
        if plain:
            _line_chat(connect, label, history, tools, system, overrides, chat_id)
        else:
            open_run = None
            if run is not None:
                # The app decodes in a child process, so drawing never slows decoding (see _load_model).
                connect = partial(_load_model, run, device, compile, weights=weights, threads=threads,
                                  separate_process=not in_process)
                open_run = partial(_load_model, device=device, compile=compile, report_notice=False, threads=threads,
                                   separate_process=not in_process)
            _full_screen(connect, label, history, tools, system, overrides, chat_id, open_run,
                         None if run is None else run.resolve().parent)
    finally:
        history.close()


def _load_model(run: Path, device: str, compile: bool = False, report_notice: bool = True,
                weights: str | None = None, threads: int | None = None,
                separate_process: bool = False):  # -> ChatModel or ModelProcess
    """The run as a reply source; with `separate_process`, decoding in a child process (the full-screen app:
    its drawing would otherwise compete with decoding for the interpreter lock)."""
    from cognimamba.inference.model_process import LoadRequest, ModelProcess  # inside: a fast `cogni --help`

    request = LoadRequest(run, device, compile, weights, threads)
    source = ModelProcess(request) if separate_process else request.load()
    source.warm_up()
    if source.notice and report_notice:
        sys.stderr.write(source.notice + "\n")
    return source


def _answer_once(session, source, text: str, as_json: bool) -> None:
    import io

    from cognimamba.chat.controller import ChatController
    from cognimamba.chat.plain import ReplyPrinter, prompt_json, reply_once

    quiet = io.StringIO()
    printer = ReplyPrinter(quiet, quiet) if as_json else ReplyPrinter(sys.stdout, sys.stderr)
    reply_once(ChatController(session), text, source, printer)  # no history: scripts leave none
    if as_json:
        sys.stdout.write(json.dumps(prompt_json(printer), ensure_ascii=False) + "\n")


def _connect_remote(url: str, api_key: str | None, model: str | None, report_notice: bool = True):  # -> RemoteSource
    from cognimamba.errors import CogniError

    try:
        from cognimamba.chat.remote import RemoteSource  # httpx is an optional dependency
    except ImportError:
        raise CogniError("`cogni chat --url` needs httpx: pip install 'cognimamba[serve]'") from None
    source = RemoteSource(url, api_key, model)
    if source.notice and report_notice:
        sys.stderr.write(source.notice + "\n")
    return source


def _line_chat(connect: Callable[[], Any], label: str, history, tools, system: str | None,
               overrides: dict[str, Any], chat_id: int | None) -> None:
    from cognimamba.chat.controller import ChatController
    from cognimamba.chat.plain import LineChat
    from cognimamba.chat.session import ChatSession, settings_with

    if chat_id is not None:
        history.get_chat(chat_id)  # a wrong --chat fails before loading
    source = connect()
    session = ChatSession(system or "", settings_with(source.defaults, overrides, "option"), tools)
    chat = ChatController(session, history, label)
    if chat_id is not None:
        chat = ChatController.open(history, chat_id, tools, label)
    read_line = input if sys.stdin.isatty() else _read_piped_line
    LineChat(source, chat, read_line).run()


def _read_piped_line(prompt: str) -> str:
    """Like input(), without echoing the prompt: piped chats print only replies."""
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _full_screen(connect: Callable[..., Any], label: str, history, tools, system: str | None,
                 overrides: dict[str, Any], chat_id: int | None, open_run: Callable[[Path], Any] | None = None,
                 runs_folder: Path | None = None) -> None:
    from cognimamba.chat.tui.app import ChatApp, NewChatDefaults
    from cognimamba.errors import CogniError

    if chat_id is not None:
        history.get_chat(chat_id)
    # The app shows the load notice itself: stderr is under the full screen.
    app = ChatApp(lambda: connect(report_notice=False), history, run_label=label,
                  tools=tools, defaults=NewChatDefaults(system or "", overrides), chat_id=chat_id,
                  open_run=open_run, runs_folder=runs_folder)  # the run picker lists the runs next to this one
    try:
        app.run()
    finally:
        close = getattr(app.source, "close", None)  # a model process ends with the app (one it replaced already has)
        if close is not None:
            close()
    if app.load_error:
        raise CogniError(app.load_error)


def check_run(run: Path) -> None:
    """The cheap part of loading, done before the app takes the screen, so a wrong RUN is one clear line.

    A wrong path is told from plain path checks first, before torch loads (seconds on a busy machine).
    """
    check_run_path(run)
    from cognimamba.runs import loading  # inside: loading imports torch, and `cogni --help` stays fast

    loading.check_run(run)
