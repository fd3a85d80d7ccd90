"""Continuous batching: many sequences decoded together, each in its own slot of one KV cache.

A fixed number of slots share one cache ([slots, kv heads, positions, head_dim], and each Mamba-2 layer's
state per slot). A request waits for a free slot and joins the running batch at the next step. Its prompt is
read in chunks of at most `prefill_chunk` tokens a step, between the other slots' decoding steps, so a long
prompt never stalls the streams already running (llama-server's slots, vLLM's chunked prefill); prompts waiting
at the same position are read together, in one forward pass (a burst of requests, an eval's batch). Each step
decodes one token for every slot past its prompt in one forward pass, so the weights are read once for all
of them. A slot keeps its own position, sampling settings, seed, stop strings, cancel flag and statistics; a
finished or cancelled slot is free at the next step.

Greedy decoding gives the same tokens alone or beside other requests: a row's mask hides every position
that is not its own, so only the order of float sums can differ between batch sizes (tests/inference).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.decode_step import DecodeStep, GenerationStats, stop_token_ids, token_choice
from cognimamba.inference.prefix_reuse import (
    RowMemory,
    chunk_end_checkpoints,
    copy_prefix,
    prefix_chains,
    resume,
    reusable,
    save_states,
)
from cognimamba.inference.sampling import sample_rows, seeded_generator
from cognimamba.inference.text_stream import TextStream
from cognimamba.model.build import Model, new_cache
from cognimamba.model.transformer import DecodeCache
from cognimamba.system.hardware import intra_op_threads

log = logging.getLogger("cognimamba.inference")

# Prompt tokens read per step across all slots: long enough that reading a prompt costs few steps, short
# enough that the running streams wait one chunk's forward pass at most between two of their tokens.
PREFILL_CHUNK = 256
MIN_POSITIONS = 256  # the smallest cache the engine allocates per slot
MAX_DEFAULT_SLOTS = 8  # where batching has paid on a CPU and small GPUs (benchmarks/serve_load.py)
CACHE_MEMORY_SHARE = 0.25  # the most of the device's memory the slots' cache takes by default


def cache_bytes_per_slot(model: Model) -> int:
    """Bytes one slot's decoding cache holds at the full context (keys, values and Mamba-2 states)."""
    probe = new_cache(model.config, 1, 1, device="meta", dtype=next(model.parameters()).dtype)
    tensors = [*getattr(probe, "keys", {}).values(), *getattr(probe, "values", {}).values()]
    per_position = sum(t.numel() * t.element_size() for t in tensors) // 2  # the probe holds 2 positions
    states = [tensor for state in getattr(probe, "mamba_states", {}).values() for tensor in (state.conv, state.ssm)]
    fixed = sum(t.numel() * t.element_size() for t in states)
    return per_position * (model.config.max_seq_len + 1) + fixed


def default_slots(model: Model, device: torch.device) -> int:
    """How many sequences to decode at once: MAX_DEFAULT_SLOTS, fewer where their cache would take more than
    CACHE_MEMORY_SHARE of the device's memory; one for the fixed-point model (one context for the batch)."""
    if model.config.is_fixed_point:
        return 1
    if device.type == "cuda":
        memory = torch.cuda.mem_get_info(device)[1]
    else:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 8 << 30
    return max(1, min(MAX_DEFAULT_SLOTS, int(memory * CACHE_MEMORY_SHARE) // cache_bytes_per_slot(model)))


def _ignore(*_: object) -> None:
    return None


@dataclass
class SlotRequest:
    """One sequence to generate. The callbacks run on the engine's thread: keep them quick (queue the text)."""

    prompt_ids: list[int]
    settings: GenerationConfig
    stop: Sequence[str] = ()
    cancel: threading.Event = field(default_factory=threading.Event)
    top_alternatives: int = 0  # > 0: stats.token_choices gets each token's probability and this many likeliest
    end_ids: frozenset[int] = frozenset()  # tokens that end the reply after they are delivered (kept, unlike stops)
    on_text: Callable[[str], None] = _ignore
    on_done: Callable[[GenerationStats, BaseException | None], None] = _ignore


@dataclass
class _Slot:
    row: int
    request: SlotRequest
    text: TextStream | None
    stats: GenerationStats
    unread: list[int]  # prompt ids not yet in the cache
    generator: torch.Generator | None
    history: torch.Tensor | None  # ids seen so far, for the repetition penalty
    started: float = field(default_factory=time.perf_counter)
    position: int = 0  # ids in the cache
    next_token: int | None = None  # sampled, to be fed at `position` by the next decoding step
    first_token_at: float = 0.0


class BatchEngine:
    """Decodes up to `slots` sequences at once on one thread of its own, started with the first request.

    The fixed-point model carries one context for the whole batch, so it always gets one slot.
    """

    def __init__(self, model: Model, tokenizer: Tokenizer | None, slots: int, prefill_chunk: int = PREFILL_CHUNK,
                 device: torch.device | str | None = None, one_slot_step: DecodeStep | None = None,
                 prompt_cache: bool = True, group_prompts: bool = True, inline: bool = False) -> None:
        """`one_slot_step` decodes every step (a ChatModel's, compiled with --compile): a lone stream on its own
        threads (with more slots on a view of the slot's rows), several streams as one batch (DecodeStep.slots).
        `prompt_cache` False reads every prompt whole (benchmarks/chat_eval_speed.py's baseline); `group_prompts`
        False reads one prompt a forward pass (benchmarks/prompt_burst.py's baseline). `inline` starts no thread:
        whoever waits on a reply steps the engine (`pump`), as the evals do on the thread that loaded the model,
        which then keeps the process's only OpenMP workers (system/hardware.on_passing_thread says why that
        matters)."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.slots = slots = 1 if model.config.is_fixed_point else slots
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.stop_ids = stop_token_ids(tokenizer)
        self.context_length = model.config.max_seq_len
        # One slot has no other stream to keep going: its prompt is read in one pass, as Decoder reads it.
        self.prefill_chunk = prefill_chunk if slots > 1 else self.context_length
        self.dtype = next(model.parameters()).dtype
        # Keys and values are allocated for what the requests need, growing in powers of two as longer ones come
        # (a 128k-token context is not preallocated for short chats); the fixed-point context has no positions.
        first_size = self.context_length if model.config.is_fixed_point else min(self.context_length, MIN_POSITIONS)
        self.cache = new_cache(model.config, slots, first_size, device=self.device, dtype=self.dtype)
        self.one_slot_step = one_slot_step or DecodeStep(model, self.device)
        # Prompt caching (inference/prefix_reuse.py): what each slot's rows hold; not for the fixed-point
        # model, whose one context is not kept per position.
        self.reuses_prefix = prompt_cache and isinstance(self.cache, DecodeCache)
        self.recurrent = self.reuses_prefix and bool(self.cache.mamba_states)
        # Several prompts in one pass (_prompt_group); where a Mamba-2 state would read padding, only chunks of
        # one length (the shortest prompt's rest at most).
        self.groups_prompts = group_prompts and slots > 1 and isinstance(self.cache, DecodeCache)
        self.pads_prompts = self.groups_prompts and not self.cache.mamba_states
        self._rows = [RowMemory() for _ in range(slots)]
        self._waiting: collections.deque[SlotRequest] = collections.deque()
        self._active: list[_Slot] = []
        self._lock = threading.Lock()  # the waiting queue, the active slots and the thread's start and end
        self._thread: threading.Thread | None = None
        self.inline = inline

    def warm_up(self) -> None:
        """Compile the decoding steps now (nothing to do when they run eagerly), so no request waits for it.

        Each case a busy engine meets is compiled once: one stream alone, and several. The steps write at
        positions 2 and on of the rows, which any request overwrites from position 0 before reading (and Mamba-2
        states restart at position 0).
        """
        step = self.one_slot_step
        if not step.compiles or self.model.config.is_fixed_point:  # (its one context is no place for a trial step)
            return
        with self._lock, torch.no_grad():
            if self._thread is not None:
                return  # requests are already decoding
            self._rows = [RowMemory() for _ in range(self.slots)]  # the trial steps below overwrite what rows held
            token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
            step(token, self.cache if self.slots == 1 else self.cache.rows(0, 1), 2)
            # Two rows, and every slot: a few rows multiply by the decoding copies of the weights, eight or more
            # by the weights themselves (model/linear.py), and each way is a graph of its own.
            for count in sorted({2, self.slots}) if self.slots > 1 else ():
                rows = torch.arange(count, device=self.device)
                step.slots(token.repeat(count, 1), self.cache, rows, rows + 2)

    def submit(self, request: SlotRequest) -> None:
        """Queue a request; it joins the batch at the next step. ValueError if its prompt cannot fit the context."""
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        if len(request.prompt_ids) >= self.context_length:
            raise ValueError(f"prompt of {len(request.prompt_ids)} tokens does not fit the context of "
                             f"{self.context_length}")
        with self._lock:
            self._waiting.append(request)
            if self._thread is None and not self.inline:
                self._thread = threading.Thread(target=self._run, name="cogni-batch-engine", daemon=True)
                self._thread.start()

    def stream(self, prompt_ids: list[int], settings: GenerationConfig, cancel: threading.Event | None = None,
               stop: Sequence[str] = (), top_alternatives: int = 0, end_ids: frozenset[int] = frozenset()) -> Reply:
        """The request's text deltas as an iterator, for callers on a thread of their own."""
        reply = Reply(self)
        self.submit(SlotRequest(prompt_ids, settings, stop, cancel or threading.Event(), top_alternatives, end_ids,
                                on_text=reply.items.put, on_done=reply.finish))
        return reply

    # ------------------------------------------------------------------------------------------- the loop

    def _run(self) -> None:
        """Steps while there is work; the thread ends when there is none and the next request starts another.

        Prompts are read on as many CPU threads as a step of slots runs on (DecodeStep.slot_threads), not on
        every thread: on a thread other than the main one, a small model's forward pass on two OpenMP threads
        took 2-3x its time on one (a 16-id prompt of the chat quickstart's model: 12-14 ms against 5, where the
        main thread takes 5-7 on either; benchmarks/RESULTS.md), and a model large enough for its prompts to
        gain from more threads gets them by the same rule."""
        with intra_op_threads(self.one_slot_step.slot_threads):
            while True:
                with self._lock:
                    if not (self._waiting or self._active):
                        self._thread = None
                        return
                self._safe_step()

    def pump(self) -> bool:
        """One step on the caller's thread, for an inline engine; False where no request was waiting or running."""
        with self._lock:
            if not (self._waiting or self._active):
                return False
        with intra_op_threads(self.one_slot_step.slot_threads):
            self._safe_step()
        return True

    def _safe_step(self) -> None:
        try:
            # A compiled step cannot write an inference-mode cache's rows by index (decode_slots): no_grad.
            with torch.no_grad():
                self.step()
        except Exception as error:  # one bad step fails the requests in it; the engine goes on
            log.exception("decoding step failed")
            self._fail_all(error)

    def step(self) -> None:
        """Admit waiting requests, read one chunk of prompts, decode one token for every slot past its prompt."""
        self._admit()
        self._read_prompts()
        ready = sorted((slot for slot in self._active if slot.next_token is not None), key=lambda slot: slot.row)
        if not ready:
            return
        tokens = torch.tensor([[slot.next_token] for slot in ready], dtype=torch.long, device=self.device)
        if len(ready) == 1:
            logits = self.one_slot_step(tokens, self._slot_cache(ready[0]), ready[0].position)
        else:
            rows = torch.tensor([slot.row for slot in ready], device=self.device)
            positions = torch.tensor([slot.position for slot in ready], device=self.device)
            logits = self.one_slot_step.slots(tokens, self.cache, rows, positions)
        next_ids = self._sample(ready, logits)
        for slot, row_logits, token in zip(ready, logits, next_ids, strict=True):
            self._rows[slot.row].ids.append(slot.next_token)  # type: ignore[arg-type]
            slot.position += 1
            self._accept(slot, row_logits, token)

    def _slot_cache(self, slot: _Slot) -> DecodeCache:
        """The cache one slot's sequence reads and writes: the whole cache with one slot, else its rows."""
        return self.cache if self.slots == 1 else self.cache.rows(slot.row, slot.row + 1)

    def _forward(self, ids: torch.Tensor, slot: _Slot, start: int) -> torch.Tensor:
        """Logits [1, vocab] after `ids` [1, time] of one slot, its cache rows written from `start`."""
        cache = self._slot_cache(slot)
        with self._checkpoints(cache, [slot], start):
            return self.model(ids, cache=cache, start=start, last_only=True)[:, -1]

    def _checkpoints(self, cache: DecodeCache, group: list[_Slot], start: int) -> AbstractContextManager[None]:
        """With Mamba-2 layers, the states a prompt pass goes through where its scan's chunks end become the
        group's rows' checkpoints (prefix_reuse), so later prompts sharing a prefix resume there."""
        if not self.recurrent:
            return contextlib.nullcontext()
        return chunk_end_checkpoints(cache, [self._rows[slot.row] for slot in group], start)

    def _admit(self) -> None:
        with self._lock:
            free = sorted(set(range(self.slots)) - {slot.row for slot in self._active})
            while free and self._waiting:
                request = self._waiting.popleft()
                self._fit_cache(len(request.prompt_ids) + request.settings.max_new_tokens)
                row, reused = self._pick_row(free, request.prompt_ids)
                free.remove(row)
                self._active.append(self._new_slot(row, request, reused))

    def _fit_cache(self, positions: int) -> None:
        """Grow the keys and values (powers of two, up to the context) to hold `positions`, keeping the slots'."""
        old = self.cache
        if not isinstance(old, DecodeCache) or old.max_len >= min(positions, self.context_length):
            return
        size = min(self.context_length, 1 << (positions - 1).bit_length())
        grown = DecodeCache(self.model.config, self.slots, size, device=self.device, dtype=self.dtype)
        for layer, keys in old.keys.items():
            grown.keys[layer][:, :, :keys.size(2)] = keys
            grown.values[layer][:, :, :keys.size(2)] = old.values[layer]
        for layer, state in old.mamba_states.items():
            grown.mamba_states[layer].conv.copy_(state.conv)
            grown.mamba_states[layer].ssm.copy_(state.ssm)
        self.cache = grown

    def _pick_row(self, free: list[int], prompt: list[int]) -> tuple[int, int]:
        """The free row holding the longest reusable prefix of `prompt` (the first free row if none does), and
        how many ids of the prompt it saves reading. Where a busy row holds a longer one, it is copied into the
        free row holding the fewest ids (prefix_reuse.copy_prefix)."""
        if not self.reuses_prefix:
            return free[0], 0
        saved = [reusable(self._rows[row], prompt, self.recurrent) for row in free]
        best = max(range(len(free)), key=lambda index: (saved[index], -index))
        busy = [row for row in range(self.slots) if row not in free]
        shared = {row: reusable(self._rows[row], prompt, self.recurrent, busy=True) for row in busy}
        source = max(busy, key=lambda row: shared[row], default=None)
        if source is None or shared[source] <= saved[best]:
            return free[best], saved[best]
        target = min(free, key=lambda row: (len(self._rows[row].ids), row))
        copy_prefix(self.cache, self._rows, source, target, shared[source])  # type: ignore[arg-type]
        return target, shared[source]

    def _new_slot(self, row: int, request: SlotRequest, reused: int) -> _Slot:
        settings = request.settings
        history = torch.tensor(request.prompt_ids) if settings.repetition_penalty != 1.0 else None
        text = TextStream(self.tokenizer, list(request.stop)) if self.tokenizer is not None else None
        if self.reuses_prefix:
            resume(self._rows[row], self.cache, row, reused)  # type: ignore[arg-type]
        stats = GenerationStats(prompt_tokens=len(request.prompt_ids), cached_tokens=reused)
        return _Slot(row, request, text, stats, list(request.prompt_ids[reused:]), seeded_generator(settings.seed),
                     history, position=reused)

    def _read_prompts(self) -> None:
        """Read up to `prefill_chunk` prompt ids across the slots still reading theirs, each group of slots whose
        next id sits at the same position (_prompt_group) in one forward pass: the weights are read once for all of
        them, and the passes' fixed cost is paid once (a burst of requests, the chat eval's queued turns)."""
        pending = []
        for slot in [slot for slot in self._active if slot.unread]:
            if slot.request.cancel.is_set():
                self._finish(slot, "cancelled")
            else:
                pending.append(slot)
        budget = self.prefill_chunk
        while pending and budget > 0:
            group = self._prompt_group(pending)[:budget]
            lengths = [len(slot.unread) for slot in group]
            width = min(max(lengths) if self.pads_prompts else min(lengths), budget // len(group))
            chunks = [slot.unread[:width] for slot in group]
            if len(group) == 1:
                logits = self._forward(torch.tensor(chunks, dtype=torch.long, device=self.device), group[0],
                                       group[0].position)
            else:
                logits = self._forward_rows(chunks, group)
            budget -= width * len(group)  # padded ids; one slot's chunk is `width` long
            done = []
            for slot, chunk, row_logits in zip(group, chunks, logits, strict=True):
                pending.remove(slot)
                slot.unread = slot.unread[len(chunk):]
                slot.position += len(chunk)
                memory = self._rows[slot.row]
                memory.ids.extend(chunk)
                if self.recurrent:  # a checkpoint where each pass ends: the next turn, or the prompt's next pass
                    save_states(memory, self.cache, slot.row)  # type: ignore[arg-type]
                if not slot.unread:
                    done.append((slot, row_logits))
            if done:
                next_ids = self._sample([slot for slot, _ in done], torch.stack([row for _, row in done]))
                for (slot, row_logits), token in zip(done, next_ids, strict=True):
                    self._accept(slot, row_logits, token)

    def _prompt_group(self, pending: list[_Slot]) -> list[_Slot]:
        """The slots whose prompts the next forward pass reads: the first waiting one, and every other whose next
        id sits at the same position. Shorter chunks are padded at their end; the padding's keys land past the
        row's ids, where its next step overwrites them before any query can see them. A Mamba-2 state would read
        the padding too, so with Mamba-2 layers every row reads as many ids as the shortest has left: each pass
        finishes one prompt at least, and the rest go on together at their next common position."""
        first = pending[0]
        if not self.groups_prompts:
            return [first]
        return [slot for slot in pending if slot.position == first.position]

    def _forward_rows(self, chunks: list[list[int]], group: list[_Slot]) -> torch.Tensor:
        """Logits [slots, vocab] after each slot's chunk (padded to the longest), all read in one forward pass
        at their common position: the rows are gathered into a cache of their own, and what the pass wrote
        into it goes back into their rows."""
        start, width = group[0].position, max(len(chunk) for chunk in chunks)
        ids = torch.zeros((len(chunks), width), dtype=torch.long)
        last = torch.zeros((len(chunks), width), dtype=torch.bool)  # each row's last real id: its logits
        for index, chunk in enumerate(chunks):
            ids[index, :len(chunk)] = torch.tensor(chunk)
            last[index, len(chunk) - 1] = True
        rows = torch.tensor([slot.row for slot in group], device=self.device)
        cache: DecodeCache = self.cache  # type: ignore[assignment]
        part = cache.gather_rows(rows, start, start + width)
        with self._checkpoints(part, group, start):
            logits = self.model(ids.to(self.device), cache=part, start=start, keep=last.to(self.device))
        cache.put_rows(rows, part, start, start + width)
        return logits

    @staticmethod
    def _sample(slots: list[_Slot], logits: torch.Tensor) -> list[int]:
        """Each slot's next token from its row of `logits` [slots, vocab], with its own settings and generator."""
        return sample_rows(logits, [slot.request.settings for slot in slots], [slot.generator for slot in slots],
                           [slot.history for slot in slots])

    def _accept(self, slot: _Slot, logits: torch.Tensor, token: int) -> None:
        """Take the slot's next token (sampled from `logits` [vocab]), deliver its text, end the slot if it is done."""
        request, stats = slot.request, slot.stats
        if request.cancel.is_set():
            self._finish(slot, "cancelled")
            return
        probabilities = torch.softmax(logits.float(), dim=-1) if request.top_alternatives else None
        if stats.generated_tokens == 0:
            slot.first_token_at = time.perf_counter()
            stats.time_to_first_token = slot.first_token_at - slot.started
        if token in self.stop_ids:
            self._finish(slot, "stop_token")
            return
        if probabilities is not None:
            stats.token_choices.append(token_choice(self.tokenizer, probabilities, token, request.top_alternatives))
        stats.generated_tokens += 1
        if slot.text is not None:
            delta = slot.text.push(token)
            if delta:
                request.on_text(delta)
            if slot.text.stopped:
                self._finish(slot, "stop_string")
                return
        else:
            request.on_text(str(token))
        if slot.history is not None:
            slot.history = torch.cat([slot.history, torch.tensor([token])])
        if token in request.end_ids:
            self._finish(slot, "stop_token")
        elif stats.generated_tokens >= request.settings.max_new_tokens:
            self._finish(slot, "max_new_tokens")
        elif slot.position + 1 >= self.context_length:  # the prompt and the reply fill the context
            self._finish(slot, "context")
        else:
            slot.next_token = token

    def _finish(self, slot: _Slot, reason: str) -> None:
        stats = slot.stats
        stats.stop_reason = reason
        stats.decode_seconds = time.perf_counter() - slot.first_token_at if slot.first_token_at else 0.0
        if reason != "stop_string" and slot.text is not None:
            tail = slot.text.finish()
            if tail:
                slot.request.on_text(tail)
        self._active.remove(slot)
        slot.request.on_done(stats, None)

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            failed = [slot.request for slot in self._active]
            self._active.clear()
            self._rows = [RowMemory() for _ in range(self.slots)]  # a step that failed midway left rows unknown
        for request in failed:
            request.on_done(GenerationStats(stop_reason="error"), error)


class Reply:
    """One request's text deltas as an iterator (blocking), and its statistics once it has ended. From an inline
    engine, the iterator steps the engine until its next delta is there."""

    def __init__(self, engine: BatchEngine | None = None) -> None:
        self.items: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.stats = GenerationStats()
        self.error: BaseException | None = None
        self._engine = engine if engine is not None and engine.inline else None

    def finish(self, stats: GenerationStats, error: BaseException | None) -> None:
        self.stats, self.error = stats, error
        self.items.put(None)

    def __iter__(self) -> Iterator[str]:
        while (item := self._next()) is not None:
            yield item
        if self.error is not None:
            raise self.error

    def text(self) -> str:
        return "".join(self)

    def _next(self) -> str | None:
        if self._engine is None:
            return self.items.get()
        while self.items.empty():
            if not self._engine.pump():
                raise RuntimeError("the inline engine has no request left, but this reply never ended")
        return self.items.get()


def generate_all(engine: BatchEngine, prompts: list[list[int]], settings: GenerationConfig,
                 stop: Sequence[str] = ()) -> list[tuple[str, GenerationStats]]:
    """Every prompt's reply text and statistics, in order, decoded as one continuous batch."""
    replies = [engine.stream(prompt, settings, stop=stop) for prompt in prompts]
    return [(reply.text(), reply.stats) for reply in replies]


def stream_chains(engine: BatchEngine, prompts: list[list[int]], settings: GenerationConfig,
                  end_ids: frozenset[int] = frozenset()) -> list[Reply]:
    """Every prompt's reply, in order. Prompts that extend the one before (prefix_chains) wait for it, so each
    finds the last one's ids in its slot (prompt caching); up to `engine.slots` chains decode at once."""
    replies = [Reply(engine) for _ in prompts]
    waiting = collections.deque(prefix_chains(prompts))
    lock = threading.Lock()

    def start_next_chain() -> None:
        with lock:
            chain = waiting.popleft() if waiting else None
        if chain is not None:
            submit(chain, 0)

    def submit(chain: list[int], turn: int) -> None:
        reply = replies[chain[turn]]

        def done(stats: GenerationStats, error: BaseException | None) -> None:
            reply.finish(stats, error)  # runs on the thread stepping the engine, free to queue the next request
            if turn + 1 < len(chain):
                submit(chain, turn + 1)
            else:
                start_next_chain()

        try:
            engine.submit(SlotRequest(prompts[chain[turn]], settings, end_ids=end_ids, on_text=reply.items.put,
                                      on_done=done))
        except ValueError as error:  # a prompt too long for the context fails its own reply, not the chain
            done(GenerationStats(stop_reason="error"), error)

    for _ in range(engine.slots):
        start_next_chain()
    return replies
