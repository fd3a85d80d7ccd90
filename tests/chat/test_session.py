"""The conversation loop: prompts through chat_format, context trimming, tool rounds, cancellation."""

from __future__ import annotations

import json
import threading

import pytest

from cognimamba.chat.format import ToolCall, render_conversation
from cognimamba.chat.session import (
    ChatSession,
    ContextTrimmed,
    Message,
    ReplyFinished,
    ReplyStarted,
    TextDelta,
    ToolRan,
    ToolSkipped,
    conversation_markdown,
    settings_from_dict,
    settings_with,
)
from cognimamba.chat.sources import LocalSource
from cognimamba.chat.tools import ToolBox
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.decoding import ChatModel
from cognimamba.runs.loading import load_run
from tests.chat.scripts import ScriptedSource

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'


@pytest.fixture(scope="module")
def chat_model(tiny_run) -> LocalSource:
    """The tiny run as a chat talks to it: ChatML rendered here, then decoded."""
    return LocalSource(ChatModel.from_run(load_run(tiny_run)))


def kinds(events):
    return [type(event).__name__ for event in events]


def test_reply_streams_and_records_the_message():
    source = ScriptedSource(["Hello **there**, friend."])
    session = ChatSession("Be kind.", GenerationConfig(temperature=0.0, max_new_tokens=20))
    session.add_user("hi")
    events = list(session.reply(source))
    assert kinds(events)[:2] == ["ReplyStarted", "TextDelta"] and kinds(events)[-1] == "ReplyFinished"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello **there**, friend."
    assert source.prompts == [render_conversation([{"role": "system", "content": "Be kind."},
                                                   {"role": "user", "content": "hi"}], add_generation_prompt=True)]
    options = source.options[0]
    assert (options.temperature, options.max_new_tokens, source.stops[0]) == (0.0, 20, ["<|im_start|>"])
    assert events[-1].prompt == source.prompts[0]  # what the token inspector shows: the prompt as the model got it
    assert [m.role for m in session.messages] == ["user", "assistant"]
    assert session.messages[-1].content == "Hello **there**, friend."


def test_real_model_reply_and_stats(chat_model):
    session = ChatSession(settings=GenerationConfig(temperature=0.0, max_new_tokens=12))
    session.add_user("Once upon a time")
    events = list(session.reply(chat_model))
    finished = events[-1]
    assert isinstance(finished, ReplyFinished)
    assert finished.message.content == "".join(e.text for e in events if isinstance(e, TextDelta)).strip()
    assert finished.stats.generated_tokens <= 12
    assert finished.prompt_tokens == chat_model.model.count_tokens(render_conversation(
        [{"role": "user", "content": "Once upon a time"}], add_generation_prompt=True))
    assert finished.message.meta["generated_tokens"] == finished.stats.generated_tokens


def test_turn_token_counts_add_up(chat_model):
    """plan_prompt counts each turn once; that relies on turns never merging across <|im_start|>/<|im_end|>."""
    messages = [{"role": "user", "content": "Hello there, how are you?"},
                {"role": "assistant", "content": " Fine!\n\nThanks.", "tool_calls": [{"name": "f", "arguments": {}}]},
                {"role": "tool", "content": '{"ok": true}'}, {"role": "user", "content": "\n  spaces  "}]
    system = [{"role": "system", "content": "You are a cat."}]
    whole = chat_model.model.count_tokens(render_conversation(system + messages, add_generation_prompt=True))
    parts = chat_model.model.count_tokens(render_conversation(system, add_generation_prompt=True))
    parts += sum(chat_model.model.count_tokens(render_conversation([m])) for m in messages)
    assert whole == parts


def test_context_overflow_drops_oldest_turns_but_keeps_the_system_prompt(chat_model):
    context = chat_model.context_length  # 64 tokens in the tiny run
    session = ChatSession("Be brief.", GenerationConfig(temperature=0.0, max_new_tokens=8))
    for index in range(6):
        session.messages += [Message("user", f"Tell me story number {index}."), Message("assistant", "The dog ran.")]
    session.add_user("And the last one?")
    plan = session.plan_prompt(chat_model)
    assert plan.dropped_messages > 0 and plan.dropped_messages % 2 == 0  # whole turns only
    prompt = chat_model.render(plan.messages, plan.tools)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("<|im_start|>user\nAnd the last one?<|im_end|>\n<|im_start|>assistant\n")
    assert plan.tokens == chat_model.model.count_tokens(prompt) <= context - 8
    events = list(session.reply(chat_model))
    assert isinstance(events[0], ContextTrimmed) and events[0].dropped_messages == plan.dropped_messages
    assert "system prompt is kept" in events[0].describe()
    assert len(session.messages) == 14  # trimming leaves the history itself alone


def test_a_message_too_long_for_the_context_is_a_clear_error(chat_model):
    session = ChatSession("Be brief.")
    session.add_user("word " * 200)
    with pytest.raises(CogniError, match="context of 64 tokens"):
        session.plan_prompt(chat_model)


def test_tool_calls_are_shown_but_not_run_when_tools_are_off():
    source = ScriptedSource([CALL, "never asked"])
    session = ChatSession(tools=ToolBox())
    session.add_user("What is 6 times 7?")
    events = list(session.reply(source))
    assert kinds(events) == ["ReplyStarted", *["TextDelta"] * (len(events) - 3), "ReplyFinished", "ToolSkipped"]
    skipped = events[-1]
    assert isinstance(skipped, ToolSkipped) and "tool execution is off" in skipped.reason
    assert len(source.prompts) == 1 and [m.role for m in session.messages] == ["user", "assistant"]
    assert session.messages[-1].meta["not_run"] == [skipped.reason]
    assert "<tools>" not in source.prompts[0]  # the model is not told about tools it cannot use


def test_enabled_calculator_runs_and_its_result_goes_back_to_the_model():
    source = ScriptedSource([f"Let me compute.\n{CALL}", "6 times 7 is 42."])
    session = ChatSession(tools=ToolBox(enabled=True))
    session.add_user("What is 6 times 7?")
    events = list(session.reply(source))
    ran = [e for e in events if isinstance(e, ToolRan)]
    assert len(ran) == 1 and json.loads(ran[0].result.content) == {"result": 42}
    assert [m.role for m in session.messages] == ["user", "assistant", "tool", "assistant"]
    assert session.messages[1].content == "Let me compute."
    assert '"name": "calculator"' in source.prompts[0].split("<tools>")[1]
    assert source.prompts[1].endswith('<|im_start|>tool\n<tool_response>\n{"result": 42}\n</tool_response>'
                                      '<|im_end|>\n<|im_start|>assistant\n')
    assert session.messages[-1].content == "6 times 7 is 42."
    assert sum(isinstance(e, ReplyStarted) for e in events) == 2


def test_tool_rounds_are_bounded():
    source = ScriptedSource([CALL])  # a model that never stops calling
    session = ChatSession(tools=ToolBox(enabled=True), max_tool_rounds=2)
    session.add_user("loop")
    events = list(session.reply(source))
    assert sum(isinstance(e, ReplyFinished) for e in events) == 3 and len(source.prompts) == 3


def test_no_tool_runs_when_its_result_could_not_go_back_to_the_model():
    source = ScriptedSource([CALL])  # a model that never stops calling
    session = ChatSession(tools=ToolBox(enabled=True), max_tool_rounds=2)
    session.add_user("loop")
    events = list(session.reply(source))
    assert sum(isinstance(e, ToolRan) for e in events) == 2
    assert [prompt.count("<tool_response>") for prompt in source.prompts] == [0, 1, 2]  # each result was read
    skipped = events[-1]
    assert isinstance(skipped, ToolSkipped) and "limit of 2 tool rounds" in skipped.reason
    assert [m.role for m in session.messages][-2:] == ["tool", "assistant"]
    assert session.messages[-1].meta["not_run"] == [skipped.reason]  # a reopened chat says why too


def test_malformed_call_is_kept_raw_with_a_problem():
    source = ScriptedSource(['Trying <tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>'])
    session = ChatSession(tools=ToolBox(enabled=True))
    session.add_user("hi")
    finished = next(e for e in session.reply(source) if isinstance(e, ReplyFinished))
    assert finished.message.content == "Trying" and not finished.message.tool_calls
    assert "not valid JSON" in finished.message.meta["problems"][0]
    assert finished.message.meta["raw_calls"][0].startswith("<tool_call>{\"name\"")


def test_cancel_keeps_the_partial_reply():
    source = ScriptedSource(["one two three four five"], pause_after=2)
    session = ChatSession()
    session.add_user("count")
    cancel = threading.Event()
    events = []
    for event in session.reply(source, cancel):
        events.append(event)
        if isinstance(event, TextDelta) and len(events) == 3:  # after two deltas: "one " and "two "
            cancel.set()
    finished = events[-1]
    assert isinstance(finished, ReplyFinished) and finished.stats.stop_reason == "cancelled"
    assert finished.message.content == "one two"
    assert finished.message.meta["stop_reason"] == "cancelled"


def test_settings_are_checked_like_the_config():
    settings = settings_with(GenerationConfig(), {"temperature": "0.2", "top_k": "5", "max_new_tokens": 9})
    assert (settings.temperature, settings.top_k, settings.max_new_tokens) == (0.2, 5, 9)
    with pytest.raises(CogniError, match="too large"):
        settings_with(GenerationConfig(), {"top_p": 3})
    with pytest.raises(CogniError, match="expected an integer"):
        settings_with(GenerationConfig(), {"top_k": "many"})
    with pytest.raises(CogniError, match="unknown setting"):
        settings_with(GenerationConfig(), {"beam_width": 4})
    # Stored settings from an older or damaged row fall back field by field.
    assert settings_from_dict({"temperature": 0.5, "top_k": -3, "junk": 1}) == GenerationConfig(temperature=0.5)


def test_conversation_markdown():
    session = ChatSession("Be kind.", tools=ToolBox(enabled=True))
    session.messages = [Message("user", "6*7?"), Message("assistant", "Computing.", meta={}),
                        Message("tool", '{"result": 42}', meta={"name": "calculator"}),
                        Message("assistant", "It is 42.", meta={"stop_reason": "cancelled"})]
    session.messages[1].tool_calls = [ToolCall("calculator", {"expression": "6*7"})]
    text = conversation_markdown("Maths", session, run="runs/tiny")
    assert text.startswith("# Maths\n")
    for piece in ("## System\n\nBe kind.", "## User\n\n6*7?", "Tool call `calculator`", '"expression": "6*7"',
                  "## Tool result (calculator)", '"result": 42', "It is 42.", "*(stopped)*", "`runs/tiny`"):
        assert piece in text
