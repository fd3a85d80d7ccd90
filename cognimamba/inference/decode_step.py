"""One decoding step and what a reply's decoding reports: shared by the one-stream Decoder and the batch engine.

The step runs the model on one new token per sequence with the keys and values kept, on as many CPU threads
as the model's size calls for, optionally through torch.compile.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer
from torch.fx.experimental import _config as fx_config

from cognimamba.model.linear import ready_kernel_for, refresh_transposed
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END
from cognimamba.model.transformer import DecodeCache, SlotStep, num_parameters
from cognimamba.system.hardware import intra_op_threads

# Batch-1 decoding takes one CPU thread per this many bytes of weights, up to every thread torch has: a
# smaller share per thread costs more in hand-offs than it saves (see decode_threads).
DECODE_BYTES_PER_THREAD = 32_000_000
# A long-lived decoder (`cogni serve`) compiles its steps unasked from this size up (compile_pays).
AUTO_COMPILE_MIN_PARAMETERS = 2_000_000
_compiled_calls = itertools.count()  # numbers each CompiledCall's own code object (own_code)


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


def compile_pays(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether a server should torch.compile its decoding steps when not told: on CPU, for an all-attention model
    of at least AUTO_COMPILE_MIN_PARAMETERS.

    Compiled, a `cpu`-profile token costs about 1.6 ms against 2.4 eager, and a batch of 8 rows 3.6 against 5.1
    (benchmarks/RESULTS.md), so the compile (about a minute the first time, half that once Inductor's on-disk
    cache has it) pays back after some tens of thousands of tokens: a server's life, not a chat's. A tiny model saves
    microseconds a token, never the compile. GPUs and the Mamba-2 and fixed-point models are not measured compiled
    here, so they stay eager unless asked.
    """
    config = getattr(model, "config", None)
    if device.type != "cpu" or config is None or config.is_fixed_point or "M" in config.layer_pattern:
        return False
    return num_parameters(model)[0] >= AUTO_COMPILE_MIN_PARAMETERS


def kept_guards(entries: list) -> list[bool]:
    """torch.compile's `guard_filter_fn` for a decoding step: which guards it checks before each call.

    A step of the `cpu` profile is guarded some 1,060 times, the 4gb shape's 1,740: mostly on the model's modules
    (their hook dicts, types and attributes) and on the same torch modules reached by two global names. Checking them
    took 0.1-0.4 ms a token, halved without them (benchmarks/RESULTS.md). A DecodeStep's model does not change while
    it decodes (weight formats, LoRA merges and dropout rates are set before it is built), and each CompiledCall has
    code of its own (own_code), so no other model's call meets these graphs. Dropped: every duplicate-input check
    (that two names still reach one object: torch modules under two global names, a head tied to its embedding
    table) and the guards on modules but their tensors (weights and buffers: shapes, dtypes and strides) and their
    `training` flags. Every other guard is kept.
    """
    return [entry.guard_type != "DUPLICATE_INPUT"
            and (not entry.orig_guard.source.is_unspecialized_nn_module() or entry.guard_type == "TENSOR_MATCH"
                 or entry.name.endswith(".training"))
            for entry in entries]


def own_code(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`function` behind a wrapper with a code object of its own: torch.compile keeps compiled graphs per code
    object, so this wrapper's graphs are tried on its calls only, never on another model's (which kept_guards would
    not tell apart)."""

    def call(*args: object, **kwargs: object) -> torch.Tensor:
        return function(*args, **kwargs)

    call.__code__ = call.__code__.replace(co_name=f"decode_step_{next(_compiled_calls)}")
    return call


class CompiledCall:
    """A function through torch.compile with dynamic shapes, or eagerly: without `compile`, and for good once
    compiling fails (no C++ compiler, say), when `error` says why. `seconds` is the first call's, which compiles
    (less once Inductor's on-disk cache has it); `before_first` runs before that call traces."""

    def __init__(self, function: Callable[..., torch.Tensor], compile: bool,
                 before_first: Callable[[], None] = lambda: None) -> None:
        self.eager = function
        self.compiled = torch.compile(own_code(function), dynamic=True,
                                      options={"guard_filter_fn": kept_guards}) if compile else None
        self.before_first = before_first
        self.seconds: float | None = None
        self.error: str | None = None

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        if self.seconds is not None:
            return self.compiled(*args, **kwargs)
        self.before_first()
        started = time.perf_counter()
        try:
            # No duck sizing: a warm-up's 2 rows beside 2 key-value heads would otherwise tie the two together,
            # and the first step of another row count would compile again while requests wait.
            with fx_config.patch(use_duck_shape=False):
                result = self.compiled(*args, **kwargs)
        except Exception as error:  # any compiler failure; the eager call below is the same math
            self.compiled = None
            first_line = next(iter(str(error).strip().splitlines()), "")
            self.error = f"{type(error).__name__}: {first_line}"
            return self.eager(*args, **kwargs)
        self.seconds = time.perf_counter() - started
        return result


class DecodeStep:
    """The model on one new token per sequence, keys and values kept: what every decoding loop calls.

    `__call__` steps one sequence (or a uniform batch) at one position; on CPU it runs on `threads` threads, by
    default as many as the model's size calls for (decode_threads). `slots` steps rows of a batch engine's
    cache, each at its own position, on as many threads as one row. With `compile`, both run through torch.compile with
    dynamic shapes, so neither the growing cache nor the number of rows recompiles: an eager step of a small
    model is mostly dispatching a hundred tiny operations, which Inductor fuses (benchmarks/RESULTS.md). The
    first call of each pays the compile; a failure leaves that one eager, and `compile_error` says why.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, compile: bool = False, batch: int = 1,
                 threads: int | None = None) -> None:
        self.model = model
        # A batch engine's rows (up to 16) follow the same rule as one row: its steps still stream every weight
        # once, and a small model's are still a hundred tiny operations. On 2 cores of a Zen 3 the `cpu`
        # profile's engine gave 949-1036 tokens/s for 8 streams on one thread against 449-784 on two
        # (benchmarks/RESULTS.md).
        self.slot_threads = threads or decode_threads(model, device)
        # A uniform batch of several sequences (cogni bench -b N) is enough work to split across cores.
        self.threads = self.slot_threads if batch == 1 else threads
        if compile:
            # Each new cache, batch size or first position is a guarded case; bench runs several in one process,
            # and past the default limit (8) torch.compile would quietly run the rest eagerly.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        ready_kernel_for(model)  # now, not at the first request's first product
        # Tracing reads the decoding copies of the weights (model/linear.py) as they are when it starts.
        refresh = lambda: refresh_transposed(model)  # noqa: E731
        self.single = CompiledCall(model, compile, refresh)
        decode_slots = getattr(model, "decode_slots", None)
        self.batched = CompiledCall(decode_slots, compile, refresh) if decode_slots is not None else None

    @property
    def compiled(self) -> Callable[..., torch.Tensor] | None:
        """The compiled single step, or None where it runs eagerly."""
        return self.single.compiled

    @property
    def compiles(self) -> bool:
        """Whether either step still runs through torch.compile (asked for, and not failed)."""
        return any(call is not None and call.compiled is not None for call in (self.single, self.batched))

    @property
    def compile_seconds(self) -> float | None:
        return self.single.seconds

    @property
    def compiled_in(self) -> float | None:
        """Seconds the steps compiled so far took, None where none was compiled."""
        calls = [call for call in (self.single, self.batched) if call is not None and call.seconds is not None]
        return sum(call.seconds for call in calls) if calls else None  # type: ignore[misc]

    @property
    def compile_error(self) -> str | None:
        return self.single.error or (self.batched.error if self.batched is not None else None)

    def __call__(self, tokens: torch.Tensor, cache: DecodeCache, position: int) -> torch.Tensor:
        """Logits [batch, vocab] for `tokens` [batch, 1] at `position`."""
        with intra_op_threads(self.threads):
            return self.single(tokens, cache=cache, start=position, last_only=True)[:, -1]

    def slots(self, tokens: torch.Tensor, cache: DecodeCache, rows: torch.Tensor,
              positions: torch.Tensor) -> torch.Tensor:
        """Logits [rows, vocab] for one new token per row (`tokens` [rows, 1]) of `cache`, each at its position.

        Compiled, the rows are always gathered: one graph serves every set of rows."""
        assert self.batched is not None, "only a LanguageModel decodes slots"
        with intra_op_threads(self.slot_threads):
            return self.batched(tokens, SlotStep(cache, rows, positions, views=self.batched.compiled is None))


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
    cached_tokens: int = 0  # of the prompt, read from a slot's cache instead of again (inference/prefix_reuse.py)
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
