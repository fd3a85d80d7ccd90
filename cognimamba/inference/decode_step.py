"""One decoding step and what a reply's decoding reports: shared by the one-stream Decoder and the batch engine.

The step runs the model on one new token per sequence with the keys and values kept, on as many CPU threads
as the model's size calls for, optionally through torch.compile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from cognimamba.model.linear import refresh_transposed
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END
from cognimamba.model.transformer import DecodeCache
from cognimamba.system.hardware import intra_op_threads

# Batch-1 decoding takes one CPU thread per this many bytes of weights, up to every thread torch has: a
# smaller share per thread costs more in hand-offs than it saves (see decode_threads).
DECODE_BYTES_PER_THREAD = 32_000_000


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters and buffers (int8 weights are buffers): about what a decoding step streams."""
    tensors = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def decode_threads(model: torch.nn.Module, device: torch.device, available: int | None = None) -> int | None:
    """CPU threads for single-token steps: one per DECODE_BYTES_PER_THREAD of weights, at most `available`
    (torch's thread count); None (unchanged) off the CPU.

    One decoding step is ~40 operations, each streaming one weight; splitting a small one across cores costs
    a thread hand-off per operation, more than it saves, and on a busy machine each hand-off waits for a
    descheduled thread (benchmarks/README.md). A large model's matrix-vector products are long enough to
    split, and the memory bandwidth of one core is then the limit, so it takes more cores. Bytes, not
    parameters: an int8 model streams a quarter of its fp32 bytes. Prefill keeps every thread.
    """
    if device.type != "cpu":
        return None
    available = available or torch.get_num_threads()
    return max(1, min(available, round(weight_bytes(model) / DECODE_BYTES_PER_THREAD)))


class DecodeStep:
    """The model on one new token per sequence, keys and values kept: what every decoding loop calls.

    On CPU it runs on `threads` threads, by default as many as the model's size calls for (decode_threads).
    With `compile`, it runs through torch.compile
    with dynamic shapes, so the growing cache does not recompile: an eager step of a small model is mostly
    dispatching a hundred tiny operations, which Inductor fuses (benchmarks/README.md). The first call pays the
    compile, less once Inductor's on-disk cache has it; `compile_seconds` says how long. If compiling fails
    (no C++ compiler, say), the step goes on eagerly and `compile_error` says why.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, compile: bool = False, batch: int = 1,
                 threads: int | None = None) -> None:
        self.model = model
        # Several sequences per step are enough work to split across cores.
        self.threads = threads or (decode_threads(model, device) if batch == 1 else None)
        self.compiled = None
        if compile:
            # Each new cache, batch size or first position is a guarded case; bench runs several in one process,
            # and past the default limit (8) torch.compile would quietly run the rest eagerly.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self.compiled = torch.compile(model, dynamic=True)
        self.compile_seconds: float | None = None
        self.compile_error: str | None = None

    def __call__(self, tokens: torch.Tensor, cache: DecodeCache, position: int) -> torch.Tensor:
        """Logits [batch, vocab] for `tokens` [batch, 1] at `position`."""
        with intra_op_threads(self.threads):
            if self.compiled is None:
                return self._run(self.model, tokens, cache, position)
            if self.compile_seconds is None:
                return self._first_compiled(tokens, cache, position)
            return self._run(self.compiled, tokens, cache, position)

    @staticmethod
    def _run(forward: Callable[..., torch.Tensor], tokens: torch.Tensor, cache: DecodeCache,
             position: int) -> torch.Tensor:
        return forward(tokens, cache=cache, start=position, last_only=True)[:, -1]

    def _first_compiled(self, tokens: torch.Tensor, cache: DecodeCache, position: int) -> torch.Tensor:
        assert self.compiled is not None
        refresh_transposed(self.model)  # tracing reads the decoding copies of the weights as they are now
        started = time.perf_counter()
        try:
            logits = self._run(self.compiled, tokens, cache, position)
        except Exception as error:  # any compiler failure; the eager step below is the same math
            self.compiled = None
            first_line = next(iter(str(error).strip().splitlines()), "")
            self.compile_error = f"{type(error).__name__}: {first_line}"
            return self._run(self.model, tokens, cache, position)
        self.compile_seconds = time.perf_counter() - started
        return logits


@dataclass(frozen=True)
class TokenChoice:
    """One generated token as the model saw it (the chat app's token inspector): the probability the model gave
    it, before temperature, top-k and top-p, and its likeliest alternatives, likeliest first."""

    token: str
    probability: float
    alternatives: tuple[tuple[str, float], ...]


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    time_to_first_token: float = 0.0
    decode_seconds: float = 0.0
    stop_reason: str = ""  # "stop_token", "stop_string", "max_new_tokens", "context", "cancelled"
    token_choices: list[TokenChoice] = field(default_factory=list)  # filled when asked for (top_alternatives)

    @property
    def tokens_per_second(self) -> float:
        """Decode speed after the first token (prefill is what time_to_first_token measures)."""
        decoded = self.generated_tokens - 1
        return decoded / self.decode_seconds if decoded > 0 and self.decode_seconds > 0 else 0.0


def stop_token_ids(tokenizer: Tokenizer | None) -> set[int]:
    """The ids that end a reply: <|endoftext|> and <|im_end|> (none without a tokenizer)."""
    stop_tokens = [tokenizer.token_to_id(t) for t in (END_OF_TEXT, IM_END)] if tokenizer else []
    return {token for token in stop_tokens if token is not None}


def token_choice(tokenizer: Tokenizer | None, probabilities: torch.Tensor, token: int, top: int) -> TokenChoice:
    """`token` with its probability and the `top` likeliest alternatives (the chat app's token inspector)."""
    values, indexes = torch.topk(probabilities, min(top, probabilities.numel()))
    name = (lambda i: tokenizer.decode([i], skip_special_tokens=False)) if tokenizer else str
    alternatives = tuple((name(i), p) for i, p in zip(indexes.tolist(), values.tolist(), strict=True))
    return TokenChoice(name(token), float(probabilities[token]), alternatives)
