"""Generation as plain functions: sample the next token, and stream text deltas with a KV cache.

The stream never emits half a UTF-8 character (byte-level BPE splits characters across tokens) nor
text that might turn out to be the start of a stop string.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from tokenizers import Tokenizer

from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.batching import BatchEngine, Reply
from cognimamba.inference.decode_step import DecodeStep, GenerationStats, stop_token_ids, token_choice
from cognimamba.inference.prefix_reuse import RowMemory, chunk_end_checkpoints, resume, reusable, save_states
from cognimamba.inference.sampling import sample_next, seeded_generator
from cognimamba.inference.text_stream import TextStream
from cognimamba.inference.weights import apply_weight_format
from cognimamba.model.build import Model, new_cache
from cognimamba.model.tokenizer import encode
from cognimamba.model.transformer import DecodeCache

if TYPE_CHECKING:
    from cognimamba.runs.loading import LoadedRun

MIN_CACHE_POSITIONS = 256  # the smallest KV cache a Decoder allocates; larger ones double as replies need


class Decoder:
    """Decodes a model's reply token by token with a preallocated KV cache, as ids or as text deltas."""

    def __init__(self, model: Model, tokenizer: Tokenizer | None,
                 device: torch.device | str | None = None, compile: bool = False, threads: int | None = None) -> None:
        """Without a tokenizer only `stream_ids` works, and no token stops generation early.

        `compile` runs decoding steps through torch.compile (see DecodeStep); prefill stays eager. `threads`
        (--threads) overrides the decoding step's own choice of CPU threads.
        """
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.stop_ids = stop_token_ids(tokenizer)
        self.stats = GenerationStats()
        self._cache: DecodeCache | None = None
        self._memory = RowMemory()  # the ids the cache holds: a chat's next turn reads only what it adds
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
            self._memory = RowMemory()  # the trial step wrote over what the cache held

    def _cache_for(self, positions: int) -> DecodeCache:
        """A cache of at least `positions` (within the context), grown in powers of two: a reply needs its prompt
        and max_new_tokens, and a long context (up to MAX_CONTEXT_LENGTH) is not preallocated for a short chat."""
        if self._cache is None or self._cache.max_len < min(positions, self.context_length):
            size = min(self.context_length, max(MIN_CACHE_POSITIONS, 1 << (positions - 1).bit_length()))
            dtype = next(self.model.parameters()).dtype
            self._cache = None  # let the old one go before the new one is allocated
            self._cache = new_cache(self.model.config, 1, size, device=self.device, dtype=dtype)
            self._memory = RowMemory()
        return self._cache

    @torch.inference_mode()
    def stream_ids(self, prompt_ids: list[int], settings: GenerationConfig,
                   cancel: threading.Event | None = None, top_alternatives: int = 0) -> Iterator[int]:
        """Token ids as they are sampled; `self.stats` describes the finished reply.

        With `top_alternatives=N`, `stats.token_choices` gets each token's probability and the N likeliest.
        """
        self.model.eval()
        self.stats = GenerationStats(prompt_tokens=len(prompt_ids))
        if not prompt_ids:
            raise ValueError("empty prompt")
        if len(prompt_ids) >= self.context_length:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context of {self.context_length}")
        generator = seeded_generator(settings.seed)
        cache = self._cache_for(len(prompt_ids) + settings.max_new_tokens)
        started = time.perf_counter()
        try:
            yield from self._reply(prompt_ids, settings, cancel, top_alternatives, cache, generator, started)
        except Exception:
            self._memory = RowMemory()  # a step that failed midway left the cache unknown
            raise

    def _reply(self, prompt_ids: list[int], settings: GenerationConfig, cancel: threading.Event | None,
               top_alternatives: int, cache: DecodeCache, generator: torch.Generator | None,
               started: float) -> Iterator[int]:
        stats, memory = self.stats, self._memory
        # Prompt caching (inference/prefix_reuse.py); not for the fixed-point model's one context.
        keeps_prefix = isinstance(cache, DecodeCache)
        reused = reusable(memory, prompt_ids, bool(cache.mamba_states)) if keeps_prefix else 0
        if keeps_prefix:
            resume(memory, cache, 0, reused)
        stats.cached_tokens = reused
        prompt = torch.tensor([prompt_ids[reused:]], dtype=torch.long, device=self.device)
        # With Mamba-2 layers, checkpoints where the scan's chunks end: an edited earlier message resumes there.
        with chunk_end_checkpoints(cache, [memory], reused) if keeps_prefix else contextlib.nullcontext():
            logits = self.model(prompt, cache=cache, start=reused, last_only=True)[0, -1]
        memory.ids.extend(prompt_ids[reused:])
        if keeps_prefix:
            save_states(memory, cache, 0)
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
                stats.token_choices.append(token_choice(self.tokenizer, probabilities, token, top_alternatives))
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
            memory.ids.append(token)
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


class TextModel(Protocol):
    """A model seen as text in, text deltas out: what chat.sources.LocalSource renders chats for, and what
    serve/engine serves. `ChatModel` decodes in this process, `model_process.ModelProcess` in a child; tests
    script one. Nothing above this surface knows about tensors or token ids.

    The defaults below are what a model without the feature does; a class gets them by subclassing this one
    (a Protocol's methods are inherited only by explicit subclasses), so no caller asks what a model can do.
    """

    name: str
    defaults: GenerationConfig
    notice: str | None = None  # something the user should know about how replies are made (after warm_up)
    top_alternatives: int = 0  # > 0: stats.token_choices describes each reply (the chat app's inspector)

    @property
    def context_length(self) -> int: ...

    @property
    def stats(self) -> GenerationStats: ...

    def count_tokens(self, text: str) -> int: ...

    def stream(self, prompt: str, settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = ()) -> Iterator[str]:
        ...

    def warm_up(self) -> None:
        """Get ready for the first reply (compile, load); nothing to do by default."""

    def close(self) -> None:
        """Let go of what the model holds (a child process); nothing to do by default. Safe to call twice."""


class ChatModel(TextModel):
    """A loaded model decoding in this process: the `TextModel` of a run (chat, serve, the evals)."""

    def __init__(self, model: Model, tokenizer: Tokenizer, name: str = "model",
                 defaults: GenerationConfig | None = None, device: torch.device | str | None = None,
                 compile: bool = False, threads: int | None = None) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.decoder = Decoder(model, tokenizer, device, compile, threads)
        self.defaults = defaults or GenerationConfig()
        self.notice: str | None = None
        self.top_alternatives = 0
        self._engine: BatchEngine | None = None
        self._engine_asked = 0

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

    def batch_engine(self, slots: int) -> BatchEngine:
        """The model decoding up to `slots` sequences at once on a thread of its own (serve), kept for the next
        call with as many slots."""
        if self._engine is None or self._engine_asked != slots:
            self._engine = self._new_engine(slots)
            self._engine_asked = slots  # what the engine was made for: it may have fewer slots
        return self._engine

    def replies(self, prompts: list[str], settings: GenerationConfig, slots: int) -> Iterator[Reply]:
        """Every prompt's reply, decoded `slots` at once; iterate each one for its text, then read its stats. The
        replies' reader steps the engine (inline, as the evals do: BatchEngine)."""
        engine = self._new_engine(slots, inline=True)
        return iter([engine.stream(encode(self.tokenizer, prompt), settings) for prompt in prompts])

    def _new_engine(self, slots: int, inline: bool = False) -> BatchEngine:
        """An engine sharing this model's decoding step (one slot for the fixed-point model, as BatchEngine gives
        it)."""
        return BatchEngine(self.decoder.model, self.tokenizer, slots, device=self.decoder.device,
                           one_slot_step=self.decoder.step, inline=inline)


@torch.inference_mode()
def greedy_ids(model: Model, prompt_ids: list[int], max_new_tokens: int, use_cache: bool = True) -> list[int]:
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
