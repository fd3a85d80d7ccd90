"""What `cogni chat` is asked to do: where replies come from (`SourceOptions`) and the chat around them
(`ChatOptions`), checked in one place before anything loads.

This module imports nothing heavy, so a wrong option or RUN path is one line before torch loads (seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cognimamba.chat.tools import ToolBox, load_tool_definitions
from cognimamba.config.schema import Config, set_field, validate
from cognimamba.errors import CogniError
from cognimamba.runs.layout import check_run_path


@dataclass(frozen=True)
class SourceOptions:
    """A run dir (`cogni chat RUN`) or an OpenAI-compatible server (`--url`), and how to load or reach it."""

    run: Path | None = None
    url: str | None = None
    api_key: str | None = None  # the server's
    model: str | None = None  # the server's model id; default: the first it lists
    device: str = "auto"
    compile: bool = False
    weights: str | None = None  # fp32, bf16, int8; default: the run's inference.weights
    threads: int | None = None

    @property
    def label(self) -> str:
        """What the chat talked to, as saved with it and shown."""
        return self.url if self.url is not None else str(self.run)

    def check(self) -> None:
        """A run's path (plain path checks, before torch loads), then its files, without building the model."""
        if (self.url is None) == (self.run is None):
            raise CogniError("give either a RUN dir or --url of an OpenAI-compatible server")
        if self.run is None:
            return
        check_run_path(self.run)
        from cognimamba.runs import loading  # noqa: PLC0415 (torch takes seconds: a wrong path is told first)

        loading.check_run(self.run)


@dataclass(frozen=True)
class ChatOptions:
    """`cogni chat`: one `--prompt` answered, the `--plain` line chat, or the full-screen app."""

    source: SourceOptions
    prompt: str | None = None  # "-": read the message from stdin
    system: str = ""
    plain: bool = False
    as_json: bool = False
    settings: dict[str, Any] = field(default_factory=dict)  # the sampling options given, over the run's defaults
    stop: tuple[str, ...] = ()
    tools_file: Path | None = None
    enable_tools: bool = False
    history_db: Path | None = None
    chat_id: int | None = None
    in_process: bool = False  # the full-screen app decodes in its own process (for debugging)

    def check(self) -> None:
        """Every mistake in the options, as one line naming the option, before a model loads or the app starts."""
        if self.as_json and self.prompt is None:
            raise CogniError("--json needs --prompt (it describes one reply)")
        if self.prompt is not None and self.plain:
            raise CogniError("--prompt and --plain do not go together; --prompt answers one message and exits")
        for name, value in self.settings.items():
            check_setting(name, value)
        self.source.check()

    def tools(self) -> ToolBox:
        """The tools the chat offers: the --tools file's (shown, never run) and the built-in ones."""
        return ToolBox(load_tool_definitions(self.tools_file) if self.tools_file else [], enabled=self.enable_tools)

    def message(self, stdin: IO[str]) -> str:
        """The --prompt message (from `stdin` for "-"), stripped; an empty one is refused."""
        assert self.prompt is not None
        text = (stdin.read() if self.prompt == "-" else self.prompt).strip()
        if not text:
            raise CogniError("--prompt: the message is empty")
        return text


def check_setting(name: str, value: Any) -> None:
    """A sampling option's value converted and range-checked as the config checks generation.NAME."""
    option = "--" + name.replace("_", "-")
    config = Config()
    set_field(config, f"generation.{name}", value, option)
    try:
        validate(config)
    except CogniError as error:
        raise CogniError(f"{option}: {error}") from None
