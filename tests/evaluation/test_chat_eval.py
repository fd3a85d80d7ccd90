"""The chat eval: turn-taking and tool calls, scored on a scripted model driven like a trained one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from cognimamba.chat.format import render_conversation
from cognimamba.config.schema import ModelConfig
from cognimamba.data.conversation import Conversation
from cognimamba.data.synthetic.chat import write_conversations
from cognimamba.evaluation.chat_eval import RunCompletions, chat_eval, fit_prompt, reply_text, takes_turn
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, IM_START, decode, encode, load_tokenizer
from tests.conftest import run_cli

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 * 7"}}\n</tool_call>'


class ScriptedModel(nn.Module):
    """A LanguageModel stand-in whose greedy continuation of a prompt is exactly `script(prompt)`'s tokens
    (turn markers included), then " la" forever: a reply without a marker runs into the token limit.
    It remembers one sequence at a time, so it is decoded in one slot."""

    def __init__(self, tokenizer, script: Callable[[str], str], max_seq_len: int = 2048) -> None:
        super().__init__()
        self.config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), dim=8, n_layers=1, n_heads=2, n_kv_heads=1,
                                  ffn_dim=8, max_seq_len=max_seq_len)
        self.anchor = nn.Parameter(torch.zeros(()))  # Decoder reads the device and dtype from a parameter
        self.tokenizer, self.script = tokenizer, script
        self.prompts: list[str] = []
        self.reply_ids: list[int] = []
        self.filler = encode(tokenizer, " la")[-1]
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
            self.reply_ids = encode(self.tokenizer, self.script(prompt))
            self.prompt_length = len(self.seen)
        step = len(self.seen) - self.prompt_length
        logits = torch.zeros(idx.size(0), 1 if last_only else idx.size(1), self.config.vocab_size)
        logits[:, -1, self.reply_ids[step] if step < len(self.reply_ids) else self.filler] = 1.0
        return logits


CALCULATOR = {"name": "calculator", "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}
HELD_OUT = [
    Conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "what is 12 times 7?"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"name": "calculator", "arguments": {"expression": "12 * 7"}}]},
                  {"role": "tool", "content": '{"result": 84}'},
                  {"role": "assistant", "content": "84."}], [CALCULATOR]),
    Conversation([{"role": "system", "content": "Answer in one sentence."},
                  {"role": "user", "content": "Why is the sky blue?"},
                  {"role": "assistant", "content": "Air scatters blue light."}]),
]

# The model's raw continuation, by what the last turn before it says.
REPLIES = {
    "hi": f"Hello there!{IM_END}",  # takes its turn
    "12 times 7": f"{CALL}{IM_END}",  # the right call, and ends its turn
    '{"result": 84}': f"It is 84.{IM_START}user\nthanks{IM_END}",  # plain, but writes the user's next turn
    "sky blue": "Because of air",  # never ends: runs into the token limit
}


def script(prompt: str) -> str:
    last_turn = prompt.rsplit(IM_START, 2)[-2]
    return next(reply for key, reply in REPLIES.items() if key in last_turn)


@pytest.fixture(scope="module")
def tokenizer(tiny_data: Path):
    return load_tokenizer(tiny_data / "tokenizer.json")


def test_turn_taking_and_tool_calls_are_scored_exactly(tokenizer) -> None:
    model = ScriptedModel(tokenizer, script)
    report = chat_eval(RunCompletions(model, tokenizer, slots=1), HELD_OUT, max_new_tokens=80)
    assert (report.turns, report.turns_taken, report.turn_taking_rate) == (4, 2, 0.5)
    tools = report.tools
    assert (tools.tool_turns, tools.parsed, tools.right_name, tools.right_args) == (1, 1, 1, 1)
    assert (tools.plain_turns, tools.no_false_call) == (3, 3)
    metrics = report.metrics()
    assert metrics["turn_taking_rate"] == 0.5 and metrics["args_rate"] == 1.0 and metrics["no_false_call_rate"] == 1.0
    assert {"turns", "turns_taken", "parse_rate", "name_rate", "right_args", "plain_turns"} <= set(metrics)
    assert [example["reply"][:6] for example in report.examples] == ["It is ", "Becaus"]
    first = HELD_OUT[0]  # the model saw the reference history as the app renders it
    assert model.prompts[1] == render_conversation(first.messages[:3], first.tools, add_generation_prompt=True)
    assert "turn-taking 0.50 (2/4)" in report.summary()


def test_a_reply_ends_its_turn_only_with_im_end_first() -> None:
    assert takes_turn(f"Hi!{IM_END}") and takes_turn(f"{CALL}{IM_END}")
    assert not takes_turn("Hi!") and not takes_turn(f"Hi!{END_OF_TEXT}")
    assert not takes_turn(f"Hi!{IM_START}system\nx{IM_END}")
    assert reply_text(f"Hi!{IM_START}user\n") == "Hi!" and reply_text(f"{CALL}{IM_END}") == CALL


def test_long_histories_keep_the_system_turn_and_drop_oldest_turns(tokenizer) -> None:
    messages = [{"role": "system", "content": "You are terse."}]
    for number in range(30):
        messages += [{"role": "user", "content": f"question {number}?"},
                     {"role": "assistant", "content": f"answer {number}."}]
    model = RunCompletions(ScriptedModel(tokenizer, lambda prompt: f"ok{IM_END}", max_seq_len=256), tokenizer, slots=1)
    prompt, trimmed = fit_prompt(messages[:-1], None, model, reserve=64)
    assert trimmed and prompt.startswith(f"{IM_START}system\nYou are terse.")
    assert "question 29?" in prompt and "question 0?" not in prompt
    assert model.count_tokens(prompt) <= 256 - 64
    report = chat_eval(model, [Conversation(messages)], max_new_tokens=8)
    assert report.turns == 30 and report.trimmed > 0 and report.turn_taking_rate == 1.0
    tiny = RunCompletions(ScriptedModel(tokenizer, lambda prompt: f"ok{IM_END}", max_seq_len=16), tokenizer,
                          slots=1)
    assert chat_eval(tiny, [Conversation(messages)], max_new_tokens=8).skipped_too_long == 30


@pytest.mark.slow
def test_cli_reports_chat_eval_as_json(tiny_run: Path, tmp_path: Path, cogni_home: Path) -> None:
    held_out = tmp_path / "held_out.jsonl"
    write_conversations(held_out, 3, seed=1)
    result = run_cli("test-model", str(tiny_run), "--chat-eval", str(held_out), "--json",
                     env={"COGNI_HOME": str(cogni_home)})
    assert result.returncode in (0, 1), result.stderr
    chat = json.loads(result.stdout)["chat_eval"]
    assert chat["turns"] + chat["skipped_too_long"] >= 3
    assert {"turn_taking_rate", "parse_rate", "name_rate", "args_rate", "no_false_call_rate"} <= set(chat)
    missing = run_cli("test-model", str(tiny_run), "--chat-eval", str(tmp_path / "nope.jsonl"))
    assert missing.returncode != 0 and "chat-eval file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
