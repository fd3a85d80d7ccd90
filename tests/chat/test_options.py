"""`cogni chat`'s options, checked in one place: each mistake one line naming the option, a wrong RUN before torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cognimamba.chat.options import ChatOptions, SourceOptions
from cognimamba.errors import CogniError
from tests.conftest import REPO


@pytest.mark.parametrize(("options", "message"), [
    (ChatOptions(SourceOptions(url="http://x/v1"), as_json=True), "--json needs --prompt"),
    (ChatOptions(SourceOptions(url="http://x/v1"), prompt="hi", plain=True), "do not go together"),
    (ChatOptions(SourceOptions()), "give either a RUN dir or --url"),
    (ChatOptions(SourceOptions(Path("run"), url="http://x/v1")), "give either a RUN dir or --url"),
    (ChatOptions(SourceOptions(url="http://x/v1"), settings={"top_p": 3}),
     "--top-p: generation.top_p = 3.0 is too large; it must be <= 1.0"),
    (ChatOptions(SourceOptions(url="http://x/v1"), settings={"temperature": "warm"}),
     "--temperature: generation.temperature: expected a number, got 'warm'"),
    (ChatOptions(SourceOptions(url="http://x/v1"), settings={"temperature": 1e-40}),
     "--temperature: generation.temperature = 1e-40 is too small to sample with"),
])
def test_each_mistake_is_one_line_naming_the_option(options: ChatOptions, message: str):
    with pytest.raises(CogniError) as caught:
        options.check()
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_good_options_pass_and_a_server_needs_no_run():
    ChatOptions(SourceOptions(url="http://x/v1"), prompt="hi", settings={"top_k": 5, "seed": 1}).check()


def test_a_wrong_run_path_is_told_before_torch_loads(tmp_path: Path):
    code = f"""
import sys
from pathlib import Path
from cognimamba.chat.options import ChatOptions, SourceOptions
from cognimamba.errors import CogniError
try:
    ChatOptions(SourceOptions(Path({str(tmp_path / 'missing')!r})), prompt="hi").check()
except CogniError as error:
    print(error)
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.stdout.splitlines()[0].endswith("run dir not found; train one with `cogni train` or "
                                                  "`cogni quickstart`"), result.stderr
    assert result.stdout.splitlines()[1] == "False"


def test_the_prompt_message_comes_from_stdin_for_a_dash_and_may_not_be_empty():
    options = ChatOptions(SourceOptions(url="http://x/v1"), prompt="-")
    assert options.message(io.StringIO("  The little dog\n")) == "The little dog"
    assert ChatOptions(SourceOptions(url="http://x/v1"), prompt=" hi ").message(io.StringIO("unread")) == "hi"
    with pytest.raises(CogniError, match="--prompt: the message is empty"):
        options.message(io.StringIO(" \n"))


def test_tools_come_from_the_file_and_run_only_when_enabled(tmp_path: Path):
    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps([{"name": "lookup", "description": "find a word",
                                       "parameters": {"type": "object"}}]))
    offered = ChatOptions(SourceOptions(url="http://x/v1"), tools_file=tools_file).tools()
    assert [tool.name for tool in offered.user_tools] == ["lookup"] and not offered.enabled
    assert ChatOptions(SourceOptions(url="http://x/v1"), enable_tools=True).tools().enabled
