"""Chat data: record formats, loss masks with exact boundaries, packing, mixing, and `cogni prepare` for chat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cognimamba.chat.format import render_conversation, render_segments
from cognimamba.data.chat_sources import Conversation, iter_conversations, resolve_chat_source
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, encode_conversation, mix, parse_mix, prepare_chat
from cognimamba.errors import CogniError
from cognimamba.model.loss import IGNORE_INDEX
from cognimamba.model.tokenizer import (
    END_OF_TEXT,
    IM_END,
    IM_START,
    TOOL_CALL,
    TOOL_RESPONSE,
    TOOLS,
    decode,
    load_tokenizer,
)
from tests.conftest import run_cli, shared_data

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}

TOOL_CONVERSATION = Conversation(
    messages=[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"role": "tool", "content": '{"temp_c": 18}'},
        {"role": "assistant", "content": "It is 18°C in Paris."},
    ],
    tools=[WEATHER],
)


@pytest.fixture(scope="module")
def tokenizer_path(tiny_data: Path) -> Path:
    return tiny_data / "tokenizer.json"


def runs(ids: list[int], mask: list[int], tokenizer, trained: bool) -> list[str]:
    """Decoded text of each maximal run of tokens whose mask equals `trained`."""
    pieces, current = [], []
    for token, flag in zip(ids, mask, strict=True):
        if flag == int(trained):
            current.append(token)
        elif current:
            pieces.append(decode(tokenizer, current))
            current = []
    if current:
        pieces.append(decode(tokenizer, current))
    return pieces


def test_mask_trains_exactly_the_assistant_replies(tokenizer_path: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_path)
    ids, mask = encode_conversation(tokenizer, TOOL_CONVERSATION)
    assert len(ids) == len(mask)
    assert decode(tokenizer, ids) == render_conversation(TOOL_CONVERSATION.messages, TOOL_CONVERSATION.tools)

    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    assert runs(ids, mask, tokenizer, trained=True) == [call, "It is 18°C in Paris.<|im_end|>"]
    untrained = runs(ids, mask, tokenizer, trained=False)
    assert len(untrained) == 3
    assert untrained[0].startswith("<|im_start|>system\nYou are helpful.\n<tools>\n")
    assert untrained[0].endswith("<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert untrained[1] == ("\n<|im_start|>tool\n<tool_response>\n{\"temp_c\": 18}\n</tool_response><|im_end|>\n"
                            "<|im_start|>assistant\n")
    assert untrained[2] == "\n"

    # Token by token: structural tokens of system/user/tool turns are never trained; assistant ones are.
    by_token: dict[str, set[int]] = {name: set() for name in (TOOLS, TOOL_RESPONSE, IM_START, TOOL_CALL, IM_END)}
    for token, flag in zip(ids, mask, strict=True):
        piece = tokenizer.id_to_token(token)
        if piece in by_token:
            by_token[piece].add(flag)
    assert by_token[TOOLS] == {0} and by_token[TOOL_RESPONSE] == {0} and by_token[IM_START] == {0}
    assert by_token[TOOL_CALL] == {1}
    assert by_token[IM_END] == {0, 1}  # closing system/user/tool turns: 0; closing the two replies: 1
    assert [flag for token, flag in zip(ids, mask, strict=True) if token == tokenizer.token_to_id(IM_END)] == \
        [0, 0, 1, 0, 1]


def test_segments_boundaries_match_token_boundaries(tokenizer_path: Path) -> None:
    """Each segment is tokenized alone, so its tokens decode back to exactly its text."""
    tokenizer = load_tokenizer(tokenizer_path)
    segments = render_segments(TOOL_CONVERSATION.messages, TOOL_CONVERSATION.tools)
    ids, mask = encode_conversation(tokenizer, TOOL_CONVERSATION)
    position = 0
    for text, trained in segments:
        count = len(tokenizer.encode(text, add_special_tokens=False).ids)
        assert decode(tokenizer, ids[position:position + count]) == text
        assert set(mask[position:position + count]) == {int(trained)}
        position += count
    assert position == len(ids)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def alpaca_records(count: int, tag: str = "q") -> list[dict]:
    return [{"instruction": f"{tag} question {i}?", "input": "", "output": f"answer {i}."} for i in range(count)]


def test_packed_stream_never_trains_across_conversations(tmp_path: Path, tokenizer_path: Path) -> None:
    source = write_jsonl(tmp_path / "chat.jsonl", alpaca_records(12))
    result = prepare_chat(ChatPrepareOptions([MixEntry(str(source), format="alpaca")], tokenizer_path,
                                             val_fraction=0.0, out=tmp_path / "data"))
    data = DataDir.open(result.data_dir.path)
    tokens, mask = np.asarray(data.tokens("train")), np.asarray(data.mask("train"))
    tokenizer = load_tokenizer(tokenizer_path)
    end = tokenizer.token_to_id(END_OF_TEXT)
    separators = np.flatnonzero(tokens == end)
    assert len(separators) == 12 and separators[-1] == len(tokens) - 1
    assert not mask[separators].any()  # the separator is not trained ...
    starts = separators[:-1] + 1
    assert (tokens[starts] == tokenizer.token_to_id(IM_START)).all() and not mask[starts].any()  # ... nor what follows
    # Through the loader: every window's trained targets are exactly the masked-in tokens.
    windows = TokenWindows(data, "train")
    for inputs, targets in windows.full_pass(batch_size=4, seq_len=64):  # a conversation is 37 tokens
        assert (targets[inputs == end] == IGNORE_INDEX).all()  # nothing is learned from the previous conversation
        assert not (targets == end).any()
    assert data.meta["format"] == "chat"
    assert data.meta["train_trained_tokens"] == int(mask.sum())
    assert data.meta["trained_fraction"] == pytest.approx(mask.sum() / len(mask))
    assert 0 < data.meta["trained_fraction"] < 1


@pytest.mark.parametrize("name,fmt", [("alpaca_en_demo.json", "alpaca"), ("glaive_toolcall_en_demo.json", "sharegpt")])
def test_shared_files_prepare_unchanged(name: str, fmt: str, tmp_path: Path, tokenizer_path: Path) -> None:
    path = shared_data(name)
    records = json.loads(path.read_text(encoding="utf-8"))
    result = prepare_chat(ChatPrepareOptions([MixEntry(str(path), format=fmt)], tokenizer_path, out=tmp_path / "d"))
    meta = result.data_dir.meta
    assert meta["sources"][0]["skipped"] == 0
    assert meta["train_conversations"] + meta["val_conversations"] == len(records)
    assert 0 < meta["trained_fraction"] < 1
    assert resolve_chat_source(str(path)).format == fmt  # detected from the first record too


def test_glaive_file_keeps_tools_calls_and_observations() -> None:
    path = shared_data("glaive_toolcall_en_demo.json")
    conversations = list(iter_conversations(resolve_chat_source(str(path), "sharegpt")))
    first = conversations[0]
    assert [tool["function"]["name"] for tool in first.tools] == ["search_recipes"]
    assert first.messages[3] == {"role": "assistant", "content": "", "tool_calls": [
        {"name": "search_recipes", "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]}}]}
    assert first.messages[4]["role"] == "tool"
    assert sum(1 for c in conversations if not c.tools) > 50  # plain chats have tools = "[]"


def test_messages_json_with_tools_prepares(tmp_path: Path, tokenizer_path: Path) -> None:
    records = [{"messages": [{"role": "user", "content": f"weather {city}?"},
                             {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                                 "name": "get_weather", "arguments": json.dumps({"city": city})}}]},
                             {"role": "tool", "content": "sunny"},
                             {"role": "assistant", "content": "Sunny."}],
                "tools": [{"type": "function", "function": WEATHER}]} for city in ("Oslo", "Lima", "Rome")]
    records.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    result = prepare_chat(ChatPrepareOptions([MixEntry(str(path), format="messages")], tokenizer_path,
                                             val_fraction=0.0, out=tmp_path / "d"))
    data = result.data_dir
    assert data.meta["train_conversations"] == 4
    text = decode(load_tokenizer(tokenizer_path), np.asarray(data.tokens("train")).tolist())
    assert text.count('{"name": "get_weather", "arguments": {"city": "Lima"}}') == 1
    assert text.count("<tools>") == 3


def test_mix_weights_and_repeats() -> None:
    def source(tag: str, count: int):
        return lambda: iter([Conversation([{"role": "assistant", "content": f"{tag}{i}"}]) for i in range(count)])

    mixed = [c.messages[0]["content"] for c in mix([source("a", 30), source("b", 5)], [3.0, 1.0])]
    a = [m for m in mixed if m.startswith("a")]
    b = [m for m in mixed if m.startswith("b")]
    assert len(a) == 30 and set(a) == {f"a{i}" for i in range(30)}  # every conversation of a, once
    assert len(b) == 10 and set(b) == {f"b{i}" for i in range(5)}  # b repeated to keep its share: 3:1
    assert mixed[:4] == ["a0", "a1", "b0", "a2"]  # smooth interleaving


def test_parse_mix_and_toml(tmp_path: Path) -> None:
    assert [(e.source, e.weight) for e in parse_mix("alpaca:0.7, data/x.json:0.3,glaive")] == \
        [("alpaca", 0.7), ("data/x.json", 0.3), ("glaive", 1.0)]
    with pytest.raises(CogniError, match="weights must be positive"):
        parse_mix("a:0")
    (tmp_path / "a.jsonl").write_text("")
    toml = tmp_path / "mix.toml"
    toml.write_text('[data]\nsystem = "Be brief."\n[[data.mix]]\nsource = "a.jsonl"\nweight = 2\nlimit = 5\n'
                    '[[data.mix]]\nsource = "synthetic-tools"\ncount = 40\nsystem = "Use tools."\n')
    first, second = parse_mix(str(toml))
    assert first.source == str(tmp_path / "a.jsonl") and first.weight == 2.0 and first.limit == 5
    assert first.system == "Be brief." and second.system == "Use tools." and second.count == 40
    toml.write_text('[data]\n[[data.mix]]\nsource = "x"\nwieght = 2\n')
    with pytest.raises(CogniError, match="unknown key 'wieght'"):
        parse_mix(str(toml))


def test_mix_prepare_keeps_validation_out_of_training(tmp_path: Path, tokenizer_path: Path) -> None:
    small = write_jsonl(tmp_path / "small.jsonl", alpaca_records(10, "small"))
    large = write_jsonl(tmp_path / "large.jsonl", alpaca_records(40, "large"))
    result = prepare_chat(ChatPrepareOptions(parse_mix(f"{small}:1,{large}:1", system="Be brief."), tokenizer_path,
                                             val_fraction=0.2, out=tmp_path / "d"))
    tokenizer = load_tokenizer(tokenizer_path)
    data = result.data_dir
    train_text = decode(tokenizer, np.asarray(data.tokens("train")).tolist())
    val_text = decode(tokenizer, np.asarray(data.tokens("val")).tolist())
    val_questions = {line for line in val_text.splitlines() if "question" in line}
    assert len(val_questions) == 2 + 8
    assert not any(question in train_text for question in val_questions)
    large_count, small_count = train_text.count("large question"), train_text.count("small question")
    assert large_count == 32  # every train conversation of the larger source, once
    assert small_count in (32, 33)  # the 8 of the smaller one repeated to the same share (1:1), give or take a turn
    assert train_text.count("<|im_start|>system\nBe brief.<|im_end|>") == large_count + small_count


@pytest.mark.slow
def test_bad_chat_input_is_one_clear_error(tmp_path: Path, tokenizer_path: Path, cogni_home: Path) -> None:
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"conversations": [{"from": "human", "value": "hi"}]}] * 3)
    with pytest.raises(CogniError, match=r"no usable sharegpt conversations \(record 1: no assistant turn\)"):
        prepare_chat(ChatPrepareOptions([MixEntry(str(wrong))], tokenizer_path, out=tmp_path / "d"))
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"text": "hello"}])
    with pytest.raises(CogniError, match="cannot tell the chat format"):
        resolve_chat_source(str(plain))
    with pytest.raises(CogniError, match=r"pass --tokenizer RUN/tokenizer\.json"):
        prepare_chat(ChatPrepareOptions([MixEntry(str(wrong))], None))
    env = {"COGNI_HOME": str(cogni_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    hub = run_cli("prepare", "ultrachat", "--tokenizer", str(tokenizer_path), "--out", str(tmp_path / "u"), env=env)
    assert hub.returncode == 2
    error_lines = [line for line in hub.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "HuggingFaceH4/ultrachat_200k" in error_lines[0], hub.stderr
    assert "Traceback" not in hub.stderr


@pytest.mark.slow
def test_cli_prepares_glaive_file(tmp_path: Path, tokenizer_path: Path, cogni_home: Path) -> None:
    path = shared_data("glaive_toolcall_en_demo.json")
    result = run_cli("prepare", str(path), "--format", "sharegpt", "--tokenizer", str(tokenizer_path),
                     "--limit", "60", "--system", "You can call tools.", "--out", str(tmp_path / "g"),
                     env={"COGNI_HOME": str(cogni_home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "g")
    assert "are trained (assistant turns)" in result.stderr
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    assert meta["sources"][0]["format"] == "sharegpt" and meta["sources"][0]["system"] == "You can call tools."
    assert meta["train_conversations"] + meta["val_conversations"] == 60
    assert (tmp_path / "g" / "train.mask.bin").stat().st_size == meta["train_tokens"]


def test_val_fraction_holds_out_that_share_of_conversations(tmp_path: Path, tokenizer_path: Path) -> None:
    source = write_jsonl(tmp_path / "chat.jsonl", alpaca_records(10))
    meta = prepare_chat(ChatPrepareOptions([MixEntry(str(source), format="alpaca")], tokenizer_path,
                                           val_fraction=0.7, out=tmp_path / "d")).data_dir.meta
    assert (meta["val_conversations"], meta["train_conversations"]) == (7, 3)
    with pytest.raises(CogniError, match=r"--val-fraction 0.96 holds out all 10 conversations of .*chat\.jsonl"):
        prepare_chat(ChatPrepareOptions([MixEntry(str(source), format="alpaca")], tokenizer_path,
                                        val_fraction=0.96, out=tmp_path / "e"))
