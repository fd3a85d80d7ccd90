"""TextStream: streamed deltas add up to the full decode, whatever the tokenizer's decoder does to word starts."""

from __future__ import annotations

import json
import random
import time

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from cognimamba.inference.text_stream import REPLACEMENT_CHAR, TextStream
from cognimamba.model.tokenizer import train_tokenizer

WORDS = ["the weather in paris is nice", "is the weather nice in paris", "nice weather"]


def metaspace_tokenizer() -> Tokenizer:
    """SentencePiece-style: words start with '▁', and the decoder drops the first word's leading space."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(WORDS * 10, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"]))
    return tokenizer


def llama2_tokenizer() -> Tokenizer:
    """Llama-2/TinyLlama's layout: '▁' normalizer, byte fallback, and a decoder that strips one leading space."""
    spec = json.loads(metaspace_tokenizer().to_str())
    vocab = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    spec["model"].update(byte_fallback=True, fuse_unk=True)
    spec["pre_tokenizer"] = None
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    return tokenizer


def byte_level_tokenizer() -> Tokenizer:
    """The house tokenizer (byte-level BPE): spaces are part of the tokens, no context needed."""
    return train_tokenizer(['Tom said hi." Then he left.', *WORDS] * 10, vocab_size=300)


def streamed(tokenizer: Tokenizer, ids: list[int], stop: list[str] | None = None) -> list[str]:
    stream = TextStream(tokenizer, stop or [])
    deltas = []
    for token in ids:
        deltas.append(stream.push(token))
        if stream.stopped:
            break
    return [*deltas, stream.finish()]


@pytest.mark.parametrize("make_tokenizer", [metaspace_tokenizer, llama2_tokenizer])
def test_streamed_words_keep_their_spaces(make_tokenizer) -> None:
    tokenizer = make_tokenizer()
    ids = tokenizer.encode("the weather in paris is nice").ids
    assert len(ids) == 6  # one token per word, each starting with '▁'
    assert "".join(tokenizer.decode([token]) for token in ids) == "theweatherinparisisnice"  # why context matters
    deltas = streamed(tokenizer, ids)
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=False) == "the weather in paris is nice"
    assert deltas[1] == " weather"  # each word goes out as it arrives, with its space


def test_byte_fallback_characters_stream_whole() -> None:
    tokenizer = llama2_tokenizer()
    text = "nice, café in paris"
    ids = tokenizer.encode(text).ids
    assert "<0xC3>" in [tokenizer.id_to_token(token) for token in ids]  # 'é' is two byte tokens
    deltas = streamed(tokenizer, ids)
    assert "".join(deltas) == text
    assert not any(REPLACEMENT_CHAR in delta for delta in deltas)


@pytest.mark.parametrize("make_tokenizer", [byte_level_tokenizer, llama2_tokenizer])
@pytest.mark.parametrize("stop", [['"', "."], [".", '"']])
def test_the_stop_string_earliest_in_the_text_wins(make_tokenizer, stop: list[str]) -> None:
    tokenizer = make_tokenizer()
    ids = tokenizer.encode('Tom said hi." Then').ids
    assert "".join(streamed(tokenizer, ids, stop)) == "Tom said hi"


def test_a_stop_string_spanning_tokens_after_a_space_is_cut_before_it() -> None:
    tokenizer = metaspace_tokenizer()
    ids = tokenizer.encode("the weather in paris is nice").ids
    assert "".join(streamed(tokenizer, ids, ["in paris"])) == "the weather "


def test_long_stop_strings_cost_time_linear_in_the_text() -> None:
    """Four 100k-character stop strings over 5,000 one-character tokens: checked in well under a second.

    Checking every prefix of every stop string on every token made this take tens of seconds on the one
    generation worker that all requests share.
    """
    tokenizer = byte_level_tokenizer()
    digits = random.Random(0).choices("0123456789", k=5000)  # digits are single byte tokens here
    ids = [tokenizer.token_to_id(digit) for digit in digits]
    text = "".join(digits)
    stops = ["x" * 100_000,  # never starts
             "".join(random.Random(1).choices("0123456789", k=100_000)),  # short partial matches everywhere
             text[:4000] + "x" * 96_000,  # the text itself, held back until it stops matching at 4,000
             text[2500:4500] + "x" * 98_000]  # a long partial match that ends before the stop string does
    started = time.perf_counter()
    deltas = streamed(tokenizer, ids, stops)
    assert time.perf_counter() - started < 1.0
    assert "".join(deltas) == text
    ends = "".join(streamed(tokenizer, ids, [*stops[:3], text[2500:4500]]))  # this one matches
    assert ends == text[:text.find(text[2500:4500])]
