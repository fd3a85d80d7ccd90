"""The tool-call eval scores replies right: a scripted model is driven exactly like a trained one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from cognimamba.chat.format import render_conversation
from cognimamba.config.schema import ModelConfig
from cognimamba.evaluation.tool_eval import load_eval_conversations, tool_eval
from cognimamba.inference.decoding import ChatModel
from cognimamba.model.tokenizer import IM_END, IM_START, decode, encode, load_tokenizer
from tests.conftest import run_cli, shared_data


class ScriptedModel(nn.Module):  # one sequence at a time: decoded in one slot (slots=1)
    """A LanguageModel stand-in: same forward signature and logits, KV cache accepted, but its greedy
    continuation of a prompt is `script(prompt)` followed by <|im_end|>. Sampled (non-greedy) decoding
    would scramble the replies, since every other token keeps a fair share of the probability."""

    def __init__(self, tokenizer, script: Callable[[str], str], max_seq_len: int = 2048) -> None:
        super().__init__()
        self.config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), dim=8, n_layers=1, n_heads=2, n_kv_heads=1,
                                  ffn_dim=8, max_seq_len=max_seq_len)
        self.anchor = nn.Parameter(torch.zeros(()))  # Decoder reads the device and dtype from a parameter
        self.tokenizer, self.script = tokenizer, script
        self.prompts: list[str] = []
        self.reply_ids: list[int] = []
        self.prompt_length = 0
        self.seen: list[int] = []

    def forward(self, idx: torch.Tensor, cache=None, start: int = 0, last_only: bool = False) -> torch.Tensor:
        # What the cache holds: a prompt may be read from where an earlier one's ids end (prompt caching), so
        # a new prompt is any read that is not the next single token.
        new_prompt = start != len(self.seen) or idx.size(1) > 1
        self.seen = [*self.seen[:start], *idx[0].tolist()]
        if new_prompt:
            prompt = decode(self.tokenizer, self.seen)
            self.prompts.append(prompt)
            self.reply_ids = [*encode(self.tokenizer, self.script(prompt)), self.tokenizer.token_to_id(IM_END)]
            self.prompt_length = len(self.seen)
        step = len(self.seen) - self.prompt_length
        logits = torch.zeros(idx.size(0), 1 if last_only else idx.size(1), self.config.vocab_size)
        logits[:, -1, self.reply_ids[min(step, len(self.reply_ids) - 1)]] = 1.0
        return logits


def call(name: str, arguments: dict) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def tool(name: str, *properties: str) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {p: {"type": "string"} for p in properties}, "required": list(properties)}}}


WEATHER, CALCULATE, REMINDER = tool("get_weather", "city"), tool("calculate", "expression"), \
    tool("set_reminder", "message", "time")
CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "tool_calls": [call("get_weather", {"city": "Paris"})]},
                  {"role": "tool", "content": '{"temp_c": 18}'},
                  {"role": "assistant", "content": "It is 18°C."}], "tools": [WEATHER, CALCULATE]},
    {"messages": [{"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "tool_calls": [call("calculate", {"expression": "2+2"})]},
                  {"role": "tool", "content": '{"result": 4}'},
                  {"role": "assistant", "content": "4."}], "tools": [WEATHER, CALCULATE]},
    {"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello!"}], "tools": [WEATHER]},
    {"messages": [{"role": "user", "content": "Weather in Rome?"},
                  {"role": "assistant", "tool_calls": [call("get_weather", {"city": "Rome"})]}], "tools": [WEATHER]},
    {"messages": [{"role": "user", "content": "Remind me to call mom at 5."},
                  {"role": "assistant", "tool_calls": [call("set_reminder", {"message": "call mom", "time": "5"})]}],
     "tools": [WEATHER, REMINDER]},
]

# The model's reply, by what the last turn before it says.
REPLIES = {
    "Weather in Paris?": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',  # right
    '{"temp_c": 18}': "It is 18 degrees and sunny.",  # plain, as it should be
    "What is 2+2?": '<tool_call>\n{"name": "calculate", "arguments": {"expr": "2+2"}}\n</tool_call>',  # wrong key
    '{"result": 4}': '<tool_call>\n{"name": "calculate", "arguments": {"expression": "4"}}\n</tool_call>',  # false call
    "Hi!": "Hello there.",  # plain, right
    "Weather in Rome?": '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>',  # bad JSON
    "Remind me": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "mom"}}\n</tool_call>',  # wrong tool
}


def script(prompt: str) -> str:
    last_turn = prompt.rsplit(IM_START, 2)[-2]
    return next(reply for key, reply in REPLIES.items() if key in last_turn)


@pytest.fixture
def eval_file(tmp_path: Path) -> Path:
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in CONVERSATIONS), encoding="utf-8")
    return path


def test_scripted_replies_are_scored_exactly(eval_file: Path, tiny_data: Path) -> None:
    tokenizer = load_tokenizer(tiny_data / "tokenizer.json")
    model = ScriptedModel(tokenizer, script)
    conversations = load_eval_conversations(eval_file)
    report = tool_eval(ChatModel(model, tokenizer), conversations, slots=1)
    metrics = report.metrics()
    assert (metrics["tool_call_turns"], metrics["parsed_calls"], metrics["right_names"], metrics["right_args"]) == \
        (4, 3, 2, 1)
    assert (metrics["plain_turns"], metrics["no_false_calls"], metrics["skipped_too_long"]) == (3, 2, 0)
    assert metrics["parse_rate"] == 0.75 and metrics["name_rate"] == 0.5 and metrics["args_rate"] == 0.25
    assert metrics["no_false_call_rate"] == pytest.approx(2 / 3)
    # The model saw the reference history rendered by chat_format, ending in the assistant prompt.
    first = conversations[0]
    assert model.prompts[0] == render_conversation(first.messages[:1], first.tools, add_generation_prompt=True)
    assert model.prompts[1] == render_conversation(first.messages[:3], first.tools, add_generation_prompt=True)
    assert len(model.prompts) == 7


def test_turns_longer_than_the_context_are_skipped_and_counted(eval_file: Path, tiny_data: Path) -> None:
    tokenizer = load_tokenizer(tiny_data / "tokenizer.json")
    report = tool_eval(ChatModel(ScriptedModel(tokenizer, script, max_seq_len=16), tokenizer),
                       load_eval_conversations(eval_file), slots=1)
    assert report.skipped_too_long == 7 and report.tool_turns == report.plain_turns == 0
    assert report.parse_rate is None and "n/a" in report.summary()


def test_a_model_that_never_calls_tools(eval_file: Path, tiny_data: Path) -> None:
    tokenizer = load_tokenizer(tiny_data / "tokenizer.json")
    report = tool_eval(ChatModel(ScriptedModel(tokenizer, lambda prompt: "I cannot help."), tokenizer),
                       load_eval_conversations(eval_file), slots=1)
    assert (report.parse_rate, report.name_rate, report.args_rate, report.no_false_call_rate) == (0, 0, 0, 1)


def test_glaive_file_is_read_for_evaluation() -> None:
    conversations = load_eval_conversations(shared_data("glaive_toolcall_en_demo.json"))
    assert len(conversations) == 240
    assert sum(1 for c in conversations for m in c.messages if m.get("tool_calls")) == 162


@pytest.mark.slow
def test_cli_reports_tool_eval_as_json(tiny_run: Path, tmp_path: Path, cogni_home: Path) -> None:
    path = tmp_path / "small.jsonl"
    records = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
               {"messages": [{"role": "user", "content": "Go"}, {"role": "assistant", "tool_calls": [call("f", {})]}],
                "tools": [{"name": "f"}]}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    result = run_cli("test-model", str(tiny_run), "--tool-eval", str(path), "--json",
                     env={"COGNI_HOME": str(cogni_home)})
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["tool_call_turns"] + payload["plain_turns"] + payload["skipped_too_long"] == 2
    assert payload["plain_turns"] == 1 and payload["no_false_call_rate"] in (0.0, 1.0)
    assert {"parse_rate", "name_rate", "args_rate", "no_false_call_rate"} <= set(payload)
    assert any(check["name"] == "tool-call eval" for check in payload["checks"])


ROME_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'


@pytest.fixture
def rome_file(tmp_path: Path) -> Path:
    """One conversation, one tool-call turn: get_weather(city="Rome")."""
    path = tmp_path / "rome.jsonl"
    path.write_text(json.dumps(CONVERSATIONS[3]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("room", "scored"), [(0, True), (-1, False)])
def test_a_turn_is_scored_only_when_its_reference_reply_fits(rome_file: Path, tiny_data: Path, room: int,
                                                             scored: bool) -> None:
    tokenizer = load_tokenizer(tiny_data / "tokenizer.json")
    conversations = load_eval_conversations(rome_file)
    prompt = render_conversation(conversations[0].messages[:1], conversations[0].tools, add_generation_prompt=True)
    needed = len(encode(tokenizer, prompt)) + len(encode(tokenizer, ROME_CALL)) + 1  # the call and its <|im_end|>
    model = ScriptedModel(tokenizer, lambda prompt: ROME_CALL, max_seq_len=needed + room)
    report = tool_eval(ChatModel(model, tokenizer), conversations, slots=1)
    if scored:  # exactly enough room
        assert (report.tool_turns, report.right_args, report.skipped_too_long) == (1, 1, 0)
        assert report.metrics()["stop_reasons"] == {"stop_token": 1}
    else:  # one token short: the reply would be cut mid-call, which says nothing about tool use
        assert (report.tool_turns, report.skipped_too_long) == (0, 1)
        assert model.prompts == []


def test_stop_reasons_are_counted_in_the_metrics(eval_file: Path, tiny_data: Path) -> None:
    tokenizer = load_tokenizer(tiny_data / "tokenizer.json")
    rambling = ScriptedModel(tokenizer, lambda prompt: "and then " * 40)
    report = tool_eval(ChatModel(rambling, tokenizer), load_eval_conversations(eval_file), max_new_tokens=60,
                       slots=1)
    assert report.metrics()["stop_reasons"] == {"max_new_tokens": 7}
    assert "stopped by max_new_tokens 7" in report.summary()


def test_argument_values_count_not_only_their_keys(rome_file: Path, tiny_data: Path) -> None:
    tokenizer = load_tokenizer(tiny_data / "tokenizer.json")
    wrong_city = ROME_CALL.replace("Rome", "send_percentage")
    report = tool_eval(ChatModel(ScriptedModel(tokenizer, lambda prompt: wrong_city), tokenizer),
                       load_eval_conversations(rome_file), slots=1)
    metrics = report.metrics()
    assert (metrics["right_names"], metrics["right_arg_keys"], metrics["right_args"]) == (1, 1, 0)
    assert metrics["arg_keys_rate"] == 1.0 and metrics["args_rate"] == 0.0
