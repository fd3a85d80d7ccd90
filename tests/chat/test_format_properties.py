"""Property-based tests (hypothesis) for the chat renderer/parser and the tokenizer.

The identities hold for any text that does not itself contain ChatML or tool special tokens (in a real
conversation those are turn and call boundaries, not text): render then parse gives back the assistant's
content and tool calls; arbitrary model output never makes the parser raise; decode(encode(s)) == s for every
string, special tokens included.
"""

from __future__ import annotations

import functools
import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cognimamba.chat.format import ParsedReply, ToolCall, parse_assistant, render_assistant_content, render_conversation
from cognimamba.model.tokenizer import (
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    TOOL_CALL,
    TOOL_CALL_END,
    decode,
    encode,
    train_tokenizer,
    unmark,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

plain_text = st.text().filter(lambda text: not any(token in text for token in SPECIAL_TOKENS))
json_scalars = (st.none() | st.booleans() | st.integers(-(10**18), 10**18)
                | st.floats(allow_nan=False, allow_infinity=False) | plain_text)
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(plain_text, children, max_size=4), max_leaves=12)
tool_calls = st.builds(ToolCall, name=plain_text.filter(bool),
                       arguments=st.dictionaries(plain_text, json_values, max_size=4))


@FAST
@given(content=plain_text, calls=st.lists(tool_calls, max_size=3))
def test_render_then_parse_gives_back_content_and_tool_calls(content: str, calls: list[ToolCall]) -> None:
    reply = parse_assistant(unmark(render_assistant_content(content, calls)))  # the text the model reads
    assert reply.ok, reply.problems
    assert reply.content == content.strip()
    assert reply.tool_calls == calls


@FAST
@given(content=plain_text, calls=st.lists(tool_calls, min_size=1, max_size=2), question=plain_text)
def test_a_rendered_conversation_parses_back(content: str, calls: list[ToolCall], question: str) -> None:
    """Through the whole ChatML text, as chat and the exported template produce it, OpenAI-style calls included."""
    openai_calls = [{"type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
                    for call in calls]
    text = unmark(render_conversation([{"role": "user", "content": question},
                                       {"role": "assistant", "content": content, "tool_calls": openai_calls}]))
    body = text.split(f"{IM_START}assistant\n", 1)[1]
    assert body.endswith(f"{IM_END}\n")
    reply = parse_assistant(body.removesuffix(f"{IM_END}\n"), known_tools={call.name for call in calls})
    assert reply.ok, reply.problems
    assert (reply.content, reply.tool_calls) == (content.strip(), calls)


fragments = [TOOL_CALL, TOOL_CALL_END, "{", "}", "[", "]", '"name"', '"arguments"', ":", ",", '"f"', "1e999", "null",
             '"{}"', '"[1]"', "\n", " ", "\\", '"']
model_output = st.lists(st.sampled_from(fragments) | st.text(), max_size=40).map("".join)


@FAST
@given(text=st.text() | model_output, known=st.none() | st.sets(st.sampled_from(["f", "get_weather", ""])))
@example(text=f"{TOOL_CALL}\n" + "[" * 100_000 + f"\n{TOOL_CALL_END}", known=None)
@example(text=f'{TOOL_CALL}{{"name": "f", "arguments": "{{\\"a\\": 1"}}{TOOL_CALL_END}', known={"f"})
@example(text=f"{TOOL_CALL}{TOOL_CALL}{TOOL_CALL_END}{TOOL_CALL_END}", known=None)
@example(text=f'{TOOL_CALL}{{"name": "f", "arguments": {{"x": {"9" * 5000}}}}}{TOOL_CALL_END}', known={"f"})
@example(text=f'{TOOL_CALL}{{"name": "f", "arguments": "{"[" * 1000}"}}{TOOL_CALL_END}', known=None)
def test_parsing_arbitrary_model_output_never_raises(text: str, known: set[str] | None) -> None:
    reply = parse_assistant(text, known_tools=known)
    assert isinstance(reply, ParsedReply) and isinstance(reply.content, str)
    assert len(reply.problems) == len(reply.raw_calls)  # every problem shows the user the text it came from
    for call in reply.tool_calls:
        assert isinstance(call.name, str) and call.name and isinstance(call.arguments, dict)
    assert TOOL_CALL not in reply.content


@functools.cache
def small_tokenizer():
    texts = ["Once upon a time there was a little cat.", "Café, naïve, 東京, 🙂 and tabs\tand\nnewlines.",
             '{"name": "get_weather", "arguments": {"city": "Paris"}}'] * 30
    return train_tokenizer(texts, vocab_size=400)


@FAST
@given(text=st.text())
@example(text="\x00\r\n\t \u200b\ufeff\U0010ffff")
def test_tokenizer_round_trips_any_string(text: str) -> None:
    assert decode(small_tokenizer(), encode(small_tokenizer(), text)) == text


@FAST
@given(pieces=st.lists(st.text(max_size=8) | st.sampled_from(SPECIAL_TOKENS), max_size=12))
def test_tokenizer_round_trips_text_mixed_with_special_tokens(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert decode(small_tokenizer(), encode(small_tokenizer(), text)) == text
