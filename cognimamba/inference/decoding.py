"""Generation as plain functions: sample the next token, and stream text deltas with a KV cache.

The stream never emits half a UTF-8 character (byte-level BPE splits characters across tokens) nor
text that might turn out to be the start of a stop string.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer

from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.sampling import sample_next, seeded_generator
from cognimamba.inference.text_stream import TextStream
from cognimamba.inference.weights import apply_weight_format
from cognimamba.model.build import new_cache
from cognimamba.model.linear import refresh_transposed
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, encode
from cognimamba.model.transformer import KVCache, Transformer
from cognimamba.system.hardware import intra_op_threads

if TYPE_CHECKING:
    from cognimamba.runs.loading import LoadedRun

# Batch-1 decoding takes one CPU thread per this many bytes of weights, up to every thread torch has: a
# smaller share per thread costs more in hand-offs than it saves (see decode_threads).
DECODE_BYTES_PER_THREAD = 32_000_000
MIN_CACHE_POSITIONS = 256  # the smallest KV cache a Decoder allocates; larger ones double as replies need


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

    def __call__(self, tokens: torch.Tensor, cache: KVCache, position: int) -> torch.Tensor:
        """Logits [batch, vocab] for `tokens` [batch, 1] at `position`."""
        with intra_op_threads(self.threads):
            if self.compiled is None:
                return self._run(self.model, tokens, cache, position)
            if self.compile_seconds is None:
                return self._first_compiled(tokens, cache, position)
            return self._run(self.compiled, tokens, cache, position)

    @staticmethod
    def _run(forward: Callable[..., torch.Tensor], tokens: torch.Tensor, cache: KVCache,
             position: int) -> torch.Tensor:
        return forward(tokens, cache=cache, start=position, last_only=True)[:, -1]

    def _first_compiled(self, tokens: torch.Tensor, cache: KVCache, position: int) -> torch.Tensor:
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


class Decoder:
    """Decodes a model's reply token by token with a preallocated KV cache, as ids or as text deltas."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer | None,
                 device: torch.device | str | None = None, compile: bool = False, threads: int | None = None) -> None:
        """Without a tokenizer only `stream_ids` works, and no token stops generation early.

        `compile` runs decoding steps through torch.compile (see DecodeStep); prefill stays eager. `threads`
        (--threads) overrides the decoding step's own choice of CPU threads.
        """
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        stop_tokens = [tokenizer.token_to_id(t) for t in (END_OF_TEXT, IM_END)] if tokenizer else []
        self.stop_ids = {token for token in stop_tokens if token is not None}
        self.stats = GenerationStats()
        self._cache: KVCache | None = None
        self.step = DecodeStep(model, self.device, compile, threads=threads)

    @property
    def context_length(self) -> int:
        return self.model.config.max_seq_len

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Compile the decoding step now (a no-op when it is eager), so the first reply does not wait for it."""
        if self.step.compiled is not None and self.step.compile_seconds is None:
            # Position 2, not 0 or 1: torch.compile specialises those two values and would compile again later.
            tokens = torch.zeros((1, 1), dtype=torch.long, device=self.device)
            self.step(tokens, self._cache_for(3), min(2, self.context_length - 1))

    def _cache_for(self, positions: int) -> KVCache:
        """A cache of at least `positions` (within the context), grown in powers of two: a reply needs its prompt
        and max_new_tokens, and a long context (up to MAX_CONTEXT_LENGTH) is not preallocated for a short chat."""
        if self._cache is None or self._cache.max_len < min(positions, self.context_length):
            size = min(self.context_length, max(MIN_CACHE_POSITIONS, 1 << (positions - 1).bit_length()))
            dtype = next(self.model.parameters()).dtype
            self._cache = None  # let the old one go before the new one is allocated
            self._cache = new_cache(self.model.config, 1, size, device=self.device, dtype=dtype)
        return self._cache

    def _choice(self, probabilities: torch.Tensor, token: int, top: int) -> TokenChoice:
        values, indexes = torch.topk(probabilities, min(top, probabilities.numel()))
        name = (lambda i: self.tokenizer.decode([i], skip_special_tokens=False)) if self.tokenizer else str
        alternatives = tuple((name(i), p) for i, p in zip(indexes.tolist(), values.tolist(), strict=True))
        return TokenChoice(name(token), float(probabilities[token]), alternatives)

    @torch.inference_mode()
    def stream_ids(self, prompt_ids: list[int], settings: GenerationConfig,
                   cancel: threading.Event | None = None, top_alternatives: int = 0) -> Iterator[int]:
        """Token ids as they are sampled; `self.stats` describes the finished reply.

        With `top_alternatives=N`, `stats.token_choices` gets each token's probability and the N likeliest.
        """
        self.model.eval()
        stats = self.stats = GenerationStats(prompt_tokens=len(prompt_ids))
        if not prompt_ids:
            raise ValueError("empty prompt")
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context of {self.context_length}")
        generator = seeded_generator(settings.seed)
        cache = self._cache_for(len(prompt_ids) + settings.max_new_tokens)
        started = time.perf_counter()
        prompt = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        logits = self.model(prompt, cache=cache, start=0, last_only=True)[0, -1]
        history = torch.tensor(prompt_ids, dtype=torch.long) if settings.repetition_penalty != 1.0 else None
        position = len(prompt_ids)
        step_input = torch.empty((1, 1), dtype=torch.long, device=self.device)
        first_token_at = 0.0
        while True:
            if cancel is not None and cancel.is_set():
                stats.stop_reason = "cancelled"
                break
            # Before sampling: the repetition penalty edits the logits in place.
            probabilities = torch.softmax(logits.float(), dim=-1) if top_alternatives else None
            token = sample_next(logits.cpu() if generator is not None else logits, settings, generator, history)
            if stats.generated_tokens == 0:
                first_token_at = time.perf_counter()
                stats.time_to_first_token = first_token_at - started
            if token in self.stop_ids:
                stats.stop_reason = "stop_token"
                break
            if probabilities is not None:
                stats.token_choices.append(self._choice(probabilities, token, top_alternatives))
            stats.generated_tokens += 1
            stats.decode_seconds = time.perf_counter() - first_token_at
            yield token
            if history is not None:
                history = torch.cat([history, torch.tensor([token])])
            if stats.generated_tokens >= settings.max_new_tokens:
                stats.stop_reason = "max_new_tokens"
                break
            if position + 1 >= self.context_length:  # prompt + reply fill the context (as in greedy_ids' reference)
                stats.stop_reason = "context"
                break
            step_input[0, 0] = token
            logits = self.step(step_input, cache, position)[0]
            position += 1
        stats.decode_seconds = time.perf_counter() - first_token_at if first_token_at else 0.0

    def stream(self, prompt_ids: list[int], settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = (), top_alternatives: int = 0) -> Iterator[str]:
        """Text deltas of the reply; ends at a stop token, a `stop` string, the token limit or the context."""
        assert self.tokenizer is not None, "streaming text needs a tokenizer"
        text = TextStream(self.tokenizer, list(stop))
        for token in self.stream_ids(prompt_ids, settings, cancel, top_alternatives):
            delta = text.push(token)
            if delta:
                yield delta
            if text.stopped:
                self.stats.stop_reason = "stop_string"
                return
        tail = text.finish()
        if tail:
            yield tail

    def generate(self, prompt_ids: list[int], settings: GenerationConfig, stop: Sequence[str] = ()) -> str:
        return "".join(self.stream(prompt_ids, settings, stop=stop))


class ChatModel:
    """A loaded model seen as text in, text deltas out: what a chat session talks to.

    Chat code needs only this surface (and tests can script one with the same methods), so nothing above
    this class knows about tensors or token ids.
    """

    def __init__(self, model: Transformer, tokenizer: Tokenizer, name: str = "model",
                 defaults: GenerationConfig | None = None, device: torch.device | str | None = None,
                 compile: bool = False, threads: int | None = None) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.decoder = Decoder(model, tokenizer, device, compile, threads)
        self.defaults = defaults or GenerationConfig()
        self.notice: str | None = None  # something the user should know about how replies are made
        self.top_alternatives = 0  # > 0: stats.token_choices describes each reply (the chat app's inspector)

    @classmethod
    def from_run(cls, loaded: LoadedRun, compile: bool = False, weights: str | None = None,
                 threads: int | None = None) -> ChatModel:
        """`weights` (fp32, bf16, int8; default the run's inference.weights) as inference/weights.py holds them."""
        setting = "--weights" if weights else "inference.weights"
        model = apply_weight_format(loaded.model, weights or loaded.config.inference.weights, setting)
        return cls(model, loaded.tokenizer, name=loaded.path.name, defaults=loaded.config.generation,
                   compile=compile, threads=threads)

    @property
    def context_length(self) -> int:
        return self.decoder.context_length

    @property
    def stats(self) -> GenerationStats:
        return self.decoder.stats

    def warm_up(self) -> None:
        """Compile the decoding step before the first message (with compile); a failure becomes `notice`."""
        self.decoder.warm_up()
        if self.decoder.step.compile_error:
            self.notice = (f"--compile: torch.compile failed ({self.decoder.step.compile_error}); "
                           "replies are decoded eagerly")

    def count_tokens(self, text: str) -> int:
        return len(encode(self.tokenizer, text))

    def stream(self, prompt: str, settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        return self.decoder.stream(encode(self.tokenizer, prompt), settings, cancel, stop, self.top_alternatives)


@torch.inference_mode()
def greedy_ids(model: Transformer, prompt_ids: list[int], max_new_tokens: int, use_cache: bool = True) -> list[int]:
    """Greedy continuation ids; with use_cache=False every step reruns the full sequence (the reference)."""
    model.eval()
    ids = list(prompt_ids)
    device = next(model.parameters()).device
    if not use_cache:
        for _ in range(max_new_tokens):
            if len(ids) >= model.config.max_seq_len:
                break
            logits = model(torch.tensor([ids], device=device))[0, -1]
            ids.append(int(torch.argmax(logits)))
        return ids[len(prompt_ids):]
    decoder = Decoder(model, None, device)
    settings = GenerationConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    return list(decoder.stream_ids(list(prompt_ids), settings))
