import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer

from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import (
    LITERAL_MARK,
    SPECIAL_TOKENS,
    control_tokens,
    decode,
    encode,
    encode_plain,
    literal,
    load_tokenizer,
    split_controls,
    train_tokenizer,
    unmark,
)

TEXTS = ["Once upon a time there was a little cat.", "The cat liked to play with a red ball.",
         "Café, naïve, 東京, emoji 🙂 and tabs\tand\nnewlines."] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=400)


def test_special_tokens_are_single_reserved_ids(tokenizer) -> None:
    ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))
    for token in SPECIAL_TOKENS:
        assert encode(tokenizer, token) == [tokenizer.token_to_id(token)]
    chat = "<|im_start|>user\nhi<|im_end|>"
    assert encode(tokenizer, chat)[0] == tokenizer.token_to_id("<|im_start|>")


@pytest.mark.parametrize("text", ["", " leading space", "double  space", "ünïcödé ✓", "日本語のテキスト",
                                  "🙂🙃 mixed", "\x00\x01 control", "<|im_start|>assistant\nyes<|im_end|>",
                                  "line\r\nbreaks\n\n", "Ω≈ç√∫˜µ≤≥÷"])
def test_round_trip(tokenizer, text: str) -> None:
    assert decode(tokenizer, encode(tokenizer, text)) == text


def test_vocab_size_and_byte_fallback(tokenizer) -> None:
    assert tokenizer.get_vocab_size() <= 400
    # Text never seen in training still encodes: byte-level BPE has all 256 bytes.
    assert decode(tokenizer, encode(tokenizer, "ẞ𝔘")) == "ẞ𝔘"


def test_save_load(tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    loaded = load_tokenizer(path)
    assert encode(loaded, TEXTS[2]) == encode(tokenizer, TEXTS[2])


def test_bad_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(CogniError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CogniError, match="not a valid tokenizers JSON"):
        load_tokenizer(broken)


def test_vocab_too_small() -> None:
    with pytest.raises(CogniError, match="too small"):
        train_tokenizer(TEXTS, vocab_size=100)


def test_a_number_is_the_same_tokens_in_a_message_and_in_a_tool_call() -> None:
    """Digits split one by one: "12" after a space and after a quote is one token sequence, so it can be copied."""
    texts = ["what is 12 times 7? 12 * 7 = 84"] * 50 + ['{"expression": "12 * 7"} {"result": 84}'] * 50
    tokenizer = train_tokenizer(texts, 300)
    in_message = tokenizer.encode("what is 12 times 7?").tokens
    in_call = tokenizer.encode('{"expression": "12 * 7"}').tokens
    assert in_message[in_message.index("1"):in_message.index("1") + 2] == ["1", "2"]
    assert in_call[in_call.index("1"):in_call.index("1") + 2] == ["1", "2"]
    assert all(len(token) == 1 for token in tokenizer.encode("2024 and 1999").tokens if token.isdigit())


# Untrusted text: special-token spellings in it are characters, never control ids (llama.cpp's
# parse_special=false). The reference is the tokenizers library's own plain-text mode.
EVERY_SPELLING = "".join(f"a {token} b" for token in SPECIAL_TOKENS) + f" {LITERAL_MARK}{SPECIAL_TOKENS[2]} end"


def plain_reference(tokenizer, text: str) -> list[int]:
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.encode_special_tokens = True
    return copy.encode(text, add_special_tokens=False).ids


def test_literal_text_encodes_as_the_tokenizers_plain_text_mode(tokenizer) -> None:
    ids = encode(tokenizer, literal(EVERY_SPELLING))
    assert ids == plain_reference(tokenizer, EVERY_SPELLING) == encode_plain(tokenizer, EVERY_SPELLING)
    assert not set(ids) & {tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    assert decode(tokenizer, ids) == EVERY_SPELLING


def test_only_the_templates_own_spellings_become_control_ids(tokenizer) -> None:
    template = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    ids = encode(tokenizer, template.format(literal(EVERY_SPELLING)))
    start, end = tokenizer.token_to_id("<|im_start|>"), tokenizer.token_to_id("<|im_end|>")
    assert [i for i in ids if i < len(SPECIAL_TOKENS)] == [start, end, start]
    assert ids == [start, *plain_reference(tokenizer, "user\n" + EVERY_SPELLING), end,
                   *plain_reference(tokenizer, "\n"), start, *plain_reference(tokenizer, "assistant\n")]


@pytest.mark.parametrize("text", [*TEXTS[:3], "<|im_start|>user\n  two  spaces\n\n\nx<|im_end|>\n", "\n\n<tools>\n"])
def test_text_without_marks_encodes_as_before(tokenizer, text: str) -> None:
    assert encode(tokenizer, text) == tokenizer.encode(text, add_special_tokens=False).ids


@given(st.lists(st.sampled_from([*SPECIAL_TOKENS, LITERAL_MARK, "a", " ", "\n", "<", "|", "é"]), max_size=30))
@settings(max_examples=200, deadline=None, derandomize=True)
def test_literal_round_trips_and_keeps_every_spelling_plain(text_parts: list[str]) -> None:
    text = "".join(text_parts)
    assert unmark(literal(text)) == text
    assert split_controls(literal(text)) == [text]


def test_an_imported_tokenizers_own_control_tokens_split_only_where_unmarked(tokenizer) -> None:
    """A Llama 3 template's <|start_header_id|> is a control id; the same spelling from a message is text. A special
    token of a shape `literal` does not know ([INST]) is never a control id, and a control held as a plain added
    token (Qwen's <tool_call>) is text when marked."""
    imported = Tokenizer.from_str(tokenizer.to_str())
    imported.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                 for token in ("<|start_header_id|>", "<|eot_id|>", "[INST]")])
    imported.add_tokens([AddedToken("<think>", special=False, normalized=False)])
    assert control_tokens(imported) == {"<|start_header_id|>", "<|eot_id|>", *SPECIAL_TOKENS}
    header, eot = imported.token_to_id("<|start_header_id|>"), imported.token_to_id("<|eot_id|>")
    message = "hi <|start_header_id|> [INST] <|eot_id|> <think>"
    ids = encode(imported, f"<|start_header_id|>user{literal(message)}<|eot_id|>")
    assert [i for i in ids if i in (header, eot)] == [header, eot]
    assert imported.token_to_id("[INST]") not in ids and imported.token_to_id("<think>") in ids  # as transformers
    assert decode(imported, ids) == f"<|start_header_id|>user{message}<|eot_id|>"
    assert encode(imported, "[INST] hi") == plain_reference(imported, "[INST] hi")
    # marked, a control held as a plain added token is text; unmarked, it is its id
    tool_call = imported.token_to_id("<tool_call>")
    state = json.loads(tokenizer.to_str())
    for entry in state["added_tokens"]:
        entry["special"] = entry["content"] != "<tool_call>"
    qwen_like = Tokenizer.from_str(json.dumps(state))
    assert encode(qwen_like, "<tool_call>") == [tool_call]
    assert tool_call not in encode(qwen_like, literal("<tool_call>"))
