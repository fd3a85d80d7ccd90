"""The served model: the one module of serve/ that talks to the decoding engine (inference/*).

Everything else in serve/ sees `ServedModel`: text in, text deltas out, token counts, the finished
reply's numbers as `ReplyStats`, and `likeliest` for tool_choice "required". Tests wrap a scripted
`ReplySource` the same way, so the HTTP layer is tested without a model when a test needs exact output.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cognimamba.chat.session import ReplySource
from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.decoding import ChatModel
from cognimamba.model.tokenizer import encode
from cognimamba.runs.loading import load_run
from cognimamba.serve.schemas import SamplingParams
from cognimamba.system.hardware import pick_device

# The engine's stop reasons that mean the reply ran out of room rather than ended.
LENGTH_REASONS = ("max_new_tokens", "context")

Scorer = Callable[[str, list[str]], str]


@dataclass(frozen=True)
class ReplyStats:
    generated_tokens: int
    stop_reason: str  # "stop_token", "stop_string", "max_new_tokens", "context", "cancelled"

    @property
    def ran_out(self) -> bool:
        return self.stop_reason in LENGTH_REASONS


class ServedModel:
    """A `ReplySource` (a loaded `ChatModel`, or a scripted one in tests) as the server uses it.

    Not thread-safe: one worker thread drives it (serve/worker.py).
    """

    def __init__(self, source: ReplySource, name: str, scorer: Scorer | None = None) -> None:
        self.source = source
        self.name = name
        self.scorer = scorer

    @property
    def context_length(self) -> int:
        return self.source.context_length

    @property
    def defaults(self) -> GenerationConfig:
        return self.source.defaults

    def count_tokens(self, text: str) -> int:
        return self.source.count_tokens(text)

    def stream(self, prompt: str, params: SamplingParams, max_new_tokens: int, extra_stop: list[str],
               cancel: threading.Event) -> Iterator[str]:
        return self.source.stream(prompt, self.settings(params, max_new_tokens), cancel,
                                  stop=[*extra_stop, *params.stop])

    def last_stats(self) -> ReplyStats:
        stats = self.source.stats
        return ReplyStats(stats.generated_tokens, stats.stop_reason)

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


def model_scorer(chat_model: ChatModel) -> Scorer:
    """Scores continuations by their summed log-probability under the model, one forward pass each."""
    model, tokenizer = chat_model.decoder.model, chat_model.tokenizer

    @torch.inference_mode()
    def score(prefix: str, continuations: list[str]) -> str:
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


def load_served_model(run: Path, device: str, name: str | None = None, compile: bool = False,
                      weights: str | None = None) -> ServedModel:
    """A run dir loaded for serving, named after its directory (the run's, for a best/) unless `name` is given."""
    chat_model = ChatModel.from_run(load_run(run, device=pick_device(device)), compile=compile, weights=weights)
    chat_model.warm_up()
    path = run.resolve()
    default_name = path.parent.name if path.name == "best" else path.name
    return ServedModel(chat_model, name or default_name, model_scorer(chat_model))
