"""Fine-tuning defaults that fit the data: what `cogni train --init-from BASE --data CHATDIR` changes unasked.

A base pretrained on short text windows rarely has the context a chat data dir needs: its tool definitions
alone can fill 256 tokens, and a conversation cut to the window loses the replies worth learning. So a
fine-tune on chat data raises `model.max_seq_len` (RoPE is relative: the same weights read a longer window)
to the shortest context that holds nearly every conversation whole, up to the profile's limit; shrinks the
micro-batch so a step keeps the tokens it had; and takes fine-tuning's own learning rate, warmup and
dropout. Every field the user set (--config, --set, --max-steps ...) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cognimamba.config.profiles import finetune_context_limit, get_profile
from cognimamba.config.schema import Config
from cognimamba.data.conversation_fit import FitCounts
from cognimamba.data.data_dir import DataDir

# The context is long enough when at most this share of the conversations is trimmed or skipped.
TOLERATED_OVER_CONTEXT = 0.05
# The base's weights are already good: a third of the pretraining rate changes them without undoing them.
# A `cpu` base is not: it has trained for minutes, and a short fine-tune on top of it learned far more at
# two thirds of its rate and without dropout (held-out Glaive tool calls, benchmarks/README.md).
DEFAULT_FINETUNE_LR_FACTOR = 1 / 3
FINETUNE_LR_FACTOR = {"cpu": 2 / 3}
# Adam's moments settle in fewer steps on trained weights; a long warmup would eat a short fine-tune.
FINETUNE_WARMUP_FACTOR = 1 / 5
# A chat data dir is small next to pretraining text and is seen many times: on a GPU profile's hours some
# dropout keeps the model from memorising its replies. In a `cpu` fine-tune of minutes it only slows learning.
DEFAULT_FINETUNE_DROPOUT = 0.1
FINETUNE_DROPOUT = {"cpu": 0.0}

@dataclass
class FineTuneChoice:
    """The fields chosen for a fine-tune, as `section.field` -> value, and why the context is what it is."""

    values: dict[str, object] = field(default_factory=dict)
    context_reason: str = ""

    def describe(self) -> str:
        """The one line the training header prints."""
        shown = ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                          for name, value in self.values.items())
        reason = f" ({self.context_reason})" if self.context_reason else ""
        return f"fine-tuning defaults: {shown}{reason}; override any with --set"


def over_context_share(fit: FitCounts) -> float:
    return (fit.trimmed + fit.skipped) / fit.conversations if fit.conversations else 0.0


def fitting_context(data: DataDir, base_context: int, limit: int) -> tuple[int, str]:
    """The shortest context (the base's, then doublings, then the limit) that holds nearly every training
    conversation whole, and a few words on why; the base's context when it already does or cannot grow."""
    bounds = data.conversation_bounds("train")
    base_fit = FitCounts.of(bounds, base_context + 1)
    if over_context_share(base_fit) <= TOLERATED_OVER_CONTEXT or limit <= base_context:
        return base_context, ""
    candidates = []
    context = base_context * 2
    while context < limit:
        candidates.append(context)
        context *= 2
    candidates.append(limit)
    for context in candidates:
        fit = FitCounts.of(bounds, context + 1)
        if over_context_share(fit) <= TOLERATED_OVER_CONTEXT or context == limit:
            return context, (f"{whole_count(fit)} of {fit.conversations} conversations fit whole, "
                             f"{whole_count(base_fit)} at the base's {base_context}; the profile allows up to {limit}")
    raise AssertionError("unreachable: the limit is always a candidate")


def whole_count(fit: FitCounts) -> int:
    return fit.conversations - fit.trimmed - fit.skipped


def choose_finetune_defaults(config: Config, data: DataDir, user_set: frozenset[str], lora: bool) -> FineTuneChoice:
    """What a fine-tune on `data` should change in `config` (whose model is already the base's)."""
    choice = FineTuneChoice()
    if not data.has_mask:
        return choice  # text: continued pretraining keeps the profile's settings
    profile = get_profile(config.profile)
    base_context = config.model.max_seq_len
    if "model.max_seq_len" not in user_set:
        context, choice.context_reason = fitting_context(data, base_context, finetune_context_limit(config.profile))
        if context != base_context:
            choice.values["model.max_seq_len"] = context
            choice.values.update(same_tokens_per_step(config, base_context, context, user_set))
    if lora:
        return choice  # adapters have their own rate and dropout (--lora-dropout)
    for name, value in (*finetune_rates(config, profile.profile),
                        ("train.warmup_steps", max(1, round(profile.train.warmup_steps * FINETUNE_WARMUP_FACTOR))),
                        ("model.dropout", FINETUNE_DROPOUT.get(profile.profile, DEFAULT_FINETUNE_DROPOUT))):
        if name not in user_set:
            choice.values[name] = value
    return choice


def finetune_rates(config: Config, profile_name: str) -> list[tuple[str, float]]:
    """Every peak rate the run trains with, lowered by the same factor: with `train.optimizer = muon` the Muon
    groups hold most of the parameters, and kept at the pretraining rate they would undo the base."""
    profile = get_profile(profile_name).train
    lr_factor = FINETUNE_LR_FACTOR.get(profile_name, DEFAULT_FINETUNE_LR_FACTOR)
    rates = [("train.lr", profile.lr * lr_factor)]
    if config.train.optimizer == "muon":
        rates.append(("train.muon_lr", profile.muon_lr * lr_factor))
    return rates


def same_tokens_per_step(config: Config, base_context: int, context: int, user_set: frozenset[str]) -> dict[str, int]:
    """Micro-batch (and, below one sequence, accumulation) for `context` that keep a step's tokens."""
    if "train.micro_batch_size" in user_set:
        return {}
    micro, accum = config.train.micro_batch_size, config.train.grad_accum_steps
    step_tokens = micro * accum * base_context
    new_micro = max(1, micro * base_context // context)
    changes = {"train.micro_batch_size": new_micro}
    if "train.grad_accum_steps" not in user_set:
        changes["train.grad_accum_steps"] = max(accum, round(step_tokens / (new_micro * context)))
    return {name: value for name, value in changes.items() if value != getattr(config.train, name.split(".")[1])}


def apply_finetune_defaults(config: Config, choice: FineTuneChoice) -> None:
    for name, value in choice.values.items():
        section, field_name = name.split(".")
        setattr(getattr(config, section), field_name, value)
