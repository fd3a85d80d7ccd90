"""Byte-level BPE (the `tokenizers` library) with the chat and tool special tokens reserved from the start."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
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


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


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
