"""Byte-level BPE (the `tokenizers` library) with the chat and tool special tokens reserved from the start."""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from cognimamba.errors import CogniError

END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TOOL_CALL, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_RESPONSE, TOOL_RESPONSE_END = "<tool_response>", "</tool_response>"
TOOLS, TOOLS_END = "<tools>", "</tools>"
SPECIAL_TOKENS = [END_OF_TEXT, PAD, IM_START, IM_END, TOOL_CALL, TOOL_CALL_END, TOOL_RESPONSE,
                  TOOL_RESPONSE_END, TOOLS, TOOLS_END]
# Digits split one by one before GPT-2's regex (as SmolLM and StarCoder do: llama.cpp's "smollm" pre-tokenizer).
# With GPT-2's split alone "12" in "what is 12 times 7" is the token " 12" but in {"expression": "12 * 7"} the
# token "12": unrelated tokens, so a small model cannot copy numbers from a message into a tool call. Single digits
# are the same tokens everywhere and frequent enough that every one is well trained (benchmarks/README.md).
TOKENIZER_SPLIT = "digits"  # part of the cache keys of trained tokenizers: a new split trains a new one


def new_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    # SmolLM's tokenizer.json pre-tokenizer exactly, so GGUF exports tokenize the same in llama.cpp.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int, length: int | None = None) -> Tokenizer:
    """Train a byte-level BPE; the 256 byte symbols are always present, so any UTF-8 text encodes."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise CogniError(f"--vocab-size {vocab_size} is too small; it must be at least {256 + len(SPECIAL_TOKENS) + 1}")
    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise CogniError(f"{path}: tokenizer.json not found")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises plain Exception subclasses
        raise CogniError(f"{path}: not a valid tokenizers JSON file ({str(error).splitlines()[0]})") from error
    missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        raise CogniError(f"{path}: tokenizer lacks the special tokens {', '.join(missing)}; "
                         "train one with `cogni prepare` (without --tokenizer)")
    return tokenizer


def special_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise CogniError(f"tokenizer has no {token} token")
    return token_id


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()[:16]


# Text the model's owner did not write (messages, tool results and definitions, files, completion prompts) can
# spell a special token. `literal` marks each such spelling, and `encode` gives control ids only for the unmarked
# ones the template wrote: llama.cpp's parse_special=false for user text. The mark is U+FDD0, a Unicode
# noncharacter (reserved for a program's internal use, so it stands for nothing a user means); a mark already in
# the text is marked too, so every text round-trips through `literal` and `unmark`.
LITERAL_MARK = "\ufdd0"
# What `literal` marks: our tokens, and the shapes of the control tokens of the families import-hf reads (Llama 3,
# Qwen and SmolLM write `<|name|>`; Gemma 3 its own list). A tokenizer's special token of any other shape is never
# a control id (see `control_tokens`), so no text can spell one into a prompt unmarked.
GEMMA_CONTROL_TOKENS = ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                        "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
_SPELLINGS = "|".join([*(re.escape(token) for token in sorted([*SPECIAL_TOKENS, *GEMMA_CONTROL_TOKENS], key=len,
                                                               reverse=True)),
                       r"<\|[A-Za-z0-9_]+\|>", "<unused[0-9]+>"])
_SPELLING = re.compile(f"(?:{_SPELLINGS})")
_MARKABLE = re.compile(f"{LITERAL_MARK}|{_SPELLINGS}")
# group 1: a marked spelling (plain text); group 2: an unmarked spelling (a control id where the tokenizer has it)
_PIECES = re.compile(f"{LITERAL_MARK}({LITERAL_MARK}|{_SPELLINGS})|({_SPELLINGS})")
_ENCODERS: weakref.WeakKeyDictionary[Tokenizer, tuple[frozenset[str], Tokenizer]] = weakref.WeakKeyDictionary()


def literal(text: str) -> str:
    """Untrusted text as the template embeds it: any special-token spelling in it stays plain text."""
    return _MARKABLE.sub(lambda match: LITERAL_MARK + match.group(0), text)


def keep_plain(text: str, spellings: Collection[str]) -> str:
    """Rendered text with the template's own (unmarked) spellings of `spellings` marked too: plain text, as in a
    tokenizer that lacks those tokens (a chat template from before import-hf appended them)."""
    def mark(match: re.Match[str]) -> str:
        return LITERAL_MARK + match.group(2) if match.group(2) in spellings else match.group(0)
    return _PIECES.sub(mark, text)


def unmark(text: str) -> str:
    """Rendered text as a person reads it (and as `decode` gives it back): the marks `literal` added removed."""
    return _PIECES.sub(lambda match: match.group(1) or match.group(2), text)


def control_tokens(tokenizer: Tokenizer) -> frozenset[str]:
    """The spellings `encode` turns into control ids when unmarked: the tokenizer's special tokens of a shape
    `literal` marks, and ours (an imported tokenizer may hold `<tool_call>` as a plain added token, as Qwen's)."""
    return _encoders(tokenizer)[0]


def _encoders(tokenizer: Tokenizer) -> tuple[frozenset[str], Tokenizer]:
    """The control spellings and a copy that encodes every spelling as ordinary text; made on first use."""
    known = _ENCODERS.get(tokenizer)
    if known is None:
        added = tokenizer.get_added_tokens_decoder().values()
        controls = frozenset([*(token.content for token in added if token.special
                                and _SPELLING.fullmatch(token.content)),
                              *(token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is not None)])
        saved = tokenizer.to_str()
        if any(not token.special and token.content in controls for token in added):
            state = json.loads(saved)  # a control held as a plain added token: special in the copy, so plain
            for entry in state.get("added_tokens", []):  # mode encodes its marked spellings as text too
                entry["special"] = entry["special"] or entry["content"] in controls
            saved = json.dumps(state)
        plain = Tokenizer.from_str(saved)
        plain.encode_special_tokens = True
        known = _ENCODERS[tokenizer] = (controls, plain)
    return known


def split_controls(text: str, controls: Collection[str] = SPECIAL_TOKENS) -> list[str]:
    """Plain-text chunks (marks removed) at even indices, the unmarked spellings of `controls` between them at
    odd ones; any other spelling stays in its chunk."""
    pieces: list[str] = []
    chunk: list[str] = []
    position = 0
    for match in _PIECES.finditer(text):
        chunk.append(text[position:match.start()])
        position = match.end()
        if match.group(1) is not None or match.group(2) not in controls:
            chunk.append(match.group(1) or match.group(2))
            continue
        pieces += ["".join(chunk), match.group(2)]
        chunk = []
    chunk.append(text[position:])
    pieces.append("".join(chunk))
    return pieces


def encode_batch(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered texts: only unmarked spellings of `control_tokens` become control ids.

    Special tokens split the text exactly where the tokenizer's own parsing splits it, so text without marks
    encodes to the same ids as `tokenizer.encode`, except for a special token no template writes (one of a shape
    `literal` does not know), which is plain text.
    """
    controls, plain = _encoders(tokenizer)
    split = [split_controls(text, controls) for text in texts]
    chunks = [piece for pieces in split for index, piece in enumerate(pieces) if index % 2 == 0 and piece]
    encoded = iter(plain.encode_batch(chunks, add_special_tokens=False))
    results = []
    for pieces in split:
        ids: list[int] = []
        for index, piece in enumerate(pieces):
            if index % 2:
                ids.append(special_id(tokenizer, piece))
            elif piece:
                ids += next(encoded).ids
        results.append(ids)
    return results


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return encode_batch(tokenizer, [text])[0]


def encode_plain(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of text that is all data (a completion prompt, a document): no spelling becomes a control id."""
    return encode(tokenizer, literal(text))


def decode(tokenizer: Tokenizer, ids: Iterable[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False)


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
