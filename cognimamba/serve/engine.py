"""The served model: the one module of serve/ that talks to the decoding engine (inference/*).

Everything else in serve/ sees `ServedModel`: text in, text deltas out, token counts, the finished
reply's numbers as `ReplyStats`, and `likeliest` for tool_choice "required". Tests wrap a scripted
`TextModel` the same way, so the HTTP layer is tested without a model when a test needs exact output.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, pre_tokenizers

from cognimamba.chat.templates import CHATML, PromptFormat, run_prompt_format
from cognimamba.config.schema import GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.batching import BatchEngine, SlotRequest, default_slots
from cognimamba.inference.decode_step import GenerationStats, compile_pays
from cognimamba.inference.decoding import ChatModel, TextModel
from cognimamba.model.tokenizer import encode
from cognimamba.runs.loading import load_run
from cognimamba.serve.schemas import SamplingParams
from cognimamba.system.hardware import on_passing_thread, pick_device

log = logging.getLogger("cognimamba.serve")

# The engine's stop reasons that mean the reply ran out of room rather than ended.
LENGTH_REASONS = ("max_new_tokens", "context")

Scorer = Callable[[str, list[str]], str]
ReplyDone = Callable[["ReplyStats | None", "BaseException | None"], None]
# Pre-tokenizers that only split text, never drop or rewrite a character (Split and Punctuation unless "removed").
SPLITTING_PRE_TOKENIZERS = ("ByteLevel", "Digits", "Split", "Punctuation")


@dataclass(frozen=True)
class ReplyStats:
    generated_tokens: int
    stop_reason: str  # "stop_token", "stop_string", "max_new_tokens", "context", "cancelled"
    cached_tokens: int = 0  # prompt tokens a slot still held from an earlier request (inference/prefix_reuse.py)

    @property
    def ran_out(self) -> bool:
        return self.stop_reason in LENGTH_REASONS


class ServedModel:
    """A `TextModel` (a loaded `ChatModel`, or a scripted one in tests) as the server uses it.

    With `engine`, replies are decoded in its sequence slots beside each other (continuous batching); without
    one (a scripted source), one at a time on the thread that starts them (serve/worker.py).
    """

    def __init__(self, source: TextModel, name: str, scorer: Scorer | None = None,
                 chars_per_token: int | None = None, engine: BatchEngine | None = None,
                 prompt_format: PromptFormat = CHATML) -> None:
        self.source = source
        self.prompt_format = prompt_format  # how serve/prompting renders a chat for it
        self.name = name
        self.scorer = scorer
        self.chars_per_token = chars_per_token  # the most prompt characters one token can stand for; None: unknown
        self.engine = engine

    @property
    def parallel(self) -> int:
        """Replies decoded at once."""
        return self.engine.slots if self.engine is not None else 1

    @property
    def compiled_in(self) -> float | None:
        """Seconds its decoding steps took to compile before serving; None where they run eagerly."""
        return self.engine.one_slot_step.compiled_in if self.engine is not None else None

    @property
    def context_length(self) -> int:
        return self.source.context_length

    @property
    def defaults(self) -> GenerationConfig:
        return self.source.defaults

    @property
    def max_prompt_chars(self) -> int | None:
        """A longer prompt is at least `context_length` tokens, so it is refused without tokenizing it."""
        return None if self.chars_per_token is None else self.chars_per_token * (self.context_length - 1)

    def count_tokens(self, text: str) -> int:
        return self.source.count_tokens(text)

    def start(self, prompt: str, params: SamplingParams, max_new_tokens: int, extra_stop: list[str],
              cancel: threading.Event, on_text: Callable[[str], None], on_done: ReplyDone) -> None:
        """Begin a reply: `on_text` gets its deltas, then `on_done` its numbers (or the error that ended it).

        With an engine this returns at once and the callbacks run on the engine's thread; without one, the
        reply is decoded here before it returns.
        """
        settings, stop = self.settings(params, max_new_tokens), [*extra_stop, *params.stop]
        if self.engine is None:
            try:
                for delta in self.source.stream(prompt, settings, cancel, stop=stop):
                    on_text(delta)
            except Exception as error:
                on_done(None, error)
                return
            on_done(reply_stats(self.source.stats), None)
            return

        def done(stats: GenerationStats, error: BaseException | None) -> None:
            on_done(reply_stats(stats), error)

        assert self.engine.tokenizer is not None, "a served engine decodes text"
        ids = encode(self.engine.tokenizer, prompt)
        self.engine.submit(SlotRequest(ids, settings, stop, cancel, on_text=on_text, on_done=done))

    def settings(self, params: SamplingParams, max_new_tokens: int) -> GenerationConfig:
        """The request's sampling fields over the run's defaults (what `cogni chat` would use)."""
        defaults = self.defaults

        def pick(value, default):
            return default if value is None else value

        return GenerationConfig(temperature=pick(params.temperature, defaults.temperature),
                                top_k=pick(params.top_k, defaults.top_k), top_p=pick(params.top_p, defaults.top_p),
                                repetition_penalty=pick(params.repetition_penalty, defaults.repetition_penalty),
                                max_new_tokens=max_new_tokens, seed=pick(params.seed, defaults.seed))

    def likeliest(self, prefix: str, continuations: list[str]) -> str:
        """The continuation of `prefix` the model finds most probable (the first one without a scorer)."""
        return self.scorer(prefix, continuations) if self.scorer else continuations[0]


def reply_stats(stats: GenerationStats) -> ReplyStats:
    return ReplyStats(stats.generated_tokens, stats.stop_reason, stats.cached_tokens)


def model_scorer(chat_model: ChatModel) -> Scorer:
    """Scores continuations by their summed log-probability under the model, one forward pass each, on a passing
    thread (system/hardware.on_passing_thread: the engine's thread keeps the only OpenMP workers)."""
    model, tokenizer = chat_model.decoder.model, chat_model.tokenizer

    def score(prefix: str, continuations: list[str]) -> str:
        return on_passing_thread(lambda: likeliest(prefix, continuations))

    @torch.inference_mode()
    def likeliest(prefix: str, continuations: list[str]) -> str:
        device = next(model.parameters()).device
        prefix_ids = encode(tokenizer, prefix)
        best, best_logprob = continuations[0], float("-inf")
        for continuation in continuations:
            ids = (prefix_ids + encode(tokenizer, continuation))[-model.config.max_seq_len:]
            added = min(len(ids) - 1, len(encode(tokenizer, continuation)))
            logits = model(torch.tensor([ids], device=device))[0, -added - 1:-1].float()
            targets = torch.tensor(ids[-added:], device=device)
            logprob = float(torch.log_softmax(logits, -1).gather(1, targets[:, None]).sum())
            if logprob > best_logprob:
                best, best_logprob = continuation, logprob
        return best

    return score


def longest_token_chars(tokenizer: Tokenizer) -> int | None:
    """The most characters of text one token can stand for, where the tokenizer provably bounds it; else None.

    Byte-level BPE with all 256 byte symbols in its vocabulary, and no normalizer or pre-tokenizer that drops
    or rewrites text, puts every byte of the text's UTF-8 into exactly one token: a token stands for at most
    as many characters as it has bytes (a character is one to four bytes), a special token for its own
    characters. Otherwise (a normalizer, an unknown token that can swallow a run of text) there is no bound.
    """
    config = json.loads(tokenizer.to_str())
    pre_tokenizer = config.get("pre_tokenizer") or {}
    steps = pre_tokenizer.get("pretokenizers", [pre_tokenizer]) if pre_tokenizer.get("type") == "Sequence" \
        else [pre_tokenizer]
    splits_only = all(step.get("type") in SPLITTING_PRE_TOKENIZERS and step.get("behavior") != "Removed"
                      for step in steps)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    byte_level = any(step.get("type") == "ByteLevel" for step in steps) and config["model"]["type"] == "BPE" \
        and set(pre_tokenizers.ByteLevel.alphabet()) <= vocab.keys()
    if config.get("normalizer") is not None or not splits_only or not byte_level:
        return None
    return max(len(token) for token in vocab)


def load_served_model(run: Path, device: str, name: str | None = None, compile: bool | None = False,
                      weights: str | None = None, parallel: int | None = None) -> ServedModel:
    """A run dir loaded for serving, named after its directory (the run's, for a best/) unless `name` is given.

    `parallel` replies are decoded at once (default: inference.batching.default_slots for the model and device).
    `compile` None: torch.compile the decoding steps where it pays (inference/decode_step.compile_pays); they
    are compiled here, before the first request. Loading and compiling run on a thread of their own that ends
    (system/hardware.on_passing_thread), so the engine's thread is the only one left holding OpenMP workers.
    """
    return on_passing_thread(lambda: _load_served_model(run, device, name, compile, weights, parallel))


def _load_served_model(run: Path, device: str, name: str | None, compile: bool | None, weights: str | None,
                       parallel: int | None) -> ServedModel:
    picked = pick_device(device)
    loaded = load_run(run, device=picked)
    if compile is None:
        compile = compile_pays(loaded.model, picked)
    chat_model = ChatModel.from_run(loaded, compile=compile, weights=weights)
    model, device_used = chat_model.decoder.model, chat_model.decoder.device
    if parallel is not None and parallel > 1 and model.config.is_fixed_point:
        raise CogniError(f"--parallel {parallel}: the fixed-point model decodes one reply at a time; leave it out")
    engine = chat_model.batch_engine(parallel or default_slots(model, device_used))
    engine.warm_up()
    step = chat_model.decoder.step
    if step.compile_error:
        log.warning("torch.compile failed (%s); replies are decoded eagerly", step.compile_error)
    path = run.resolve()
    default_name = path.parent.name if path.name == "best" else path.name
    longest = longest_token_chars(chat_model.tokenizer)
    # Rendered text may carry the marks model/tokenizer.literal puts before special-token spellings, which
    # encode drops: at most one per character it keeps, so a token stands for at most twice `longest`.
    chars_per_token = 2 * longest if longest else None
    return ServedModel(chat_model, name or default_name, model_scorer(chat_model), chars_per_token, engine,
                       run_prompt_format(run))
