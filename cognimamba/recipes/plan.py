"""A recipe as data: a TOML file (one per profile ships in this package) plus the command line, resolved to a plan.

A user copies `chat_cpu.toml`, changes the sources or shares, and passes `--recipe FILE`; `--pretrain`,
`--chat`, `--budget` and `--chat-eval` on the command line replace the file's values.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cognimamba.config.profiles import detect_profile, get_profile
from cognimamba.config.schema import parse_duration
from cognimamba.data.chat_sources import CHAT_FORMATS, resolve_chat_source
from cognimamba.data.sources import resolve_source
from cognimamba.errors import CogniError
from cognimamba.system.paths import default_runs_dir

STAGES = ("tokenizer", "data", "pretrain", "chat", "eval")
STAGE_TITLES = {"tokenizer": "tokenizer on pretraining text and chat data", "data": "data dirs",
                "pretrain": "pretraining", "chat": "chat fine-tuning", "eval": "chat eval on held-out conversations"}
DEFAULT_CHAT_FRACTION = 0.5  # of the tokenizer's sample: half pretraining text, half rendered conversations


@dataclass(frozen=True)
class SourceEntry:
    """One `SOURCE[:FORMAT][@WEIGHT]`: a name `cogni prepare` knows, or a local file."""

    source: str
    format: str | None = None
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str, where: str) -> SourceEntry:
        """`glaive200.json:sharegpt@0.5`; a weight is a positive number, a format one of the chat formats."""
        body, weight = text.strip(), 1.0
        if "@" in body:
            body, _, weight_text = body.rpartition("@")
            try:
                weight = float(weight_text)
            except ValueError:
                raise CogniError(f"{where} {text}: weight {weight_text!r} is not a number; "
                                 "write SOURCE[:FORMAT][@WEIGHT], e.g. data.json:sharegpt@0.5") from None
            if not math.isfinite(weight) or weight <= 0:
                raise CogniError(f"{where} {text}: weight {weight_text} must be a positive number")
        format = None
        head, colon, tail = body.rpartition(":")
        if colon and head and not Path(body).exists() and "/" not in tail and "\\" not in tail:
            if tail not in CHAT_FORMATS:
                raise CogniError(f"{where} {text}: unknown format {tail!r}; choose one of {', '.join(CHAT_FORMATS)}")
            body, format = head, tail
        if not body:
            raise CogniError(f"{where} {text!r}: no source; write SOURCE[:FORMAT][@WEIGHT]")
        return cls(body, format, weight)

    def __str__(self) -> str:
        return f"{self.source}{':' + self.format if self.format else ''}@{self.weight:g}"


@dataclass
class StageSettings:
    """A training stage: its share of the budget and the `--set` lines it trains with."""

    share: float
    settings: list[str] = field(default_factory=list)


@dataclass
class RecipePlan:
    """Everything `cogni recipe chat` will do, resolved: printed by --dry-run, fingerprinted for resuming."""

    recipe: Path
    profile: str
    out: Path
    budget: str
    vocab_size: int
    tokenizer_sample_chars: int
    tokenizer_chat_fraction: float  # of the sample drawn from the chat data; 0: the pretraining text only
    pretrain_sources: list[SourceEntry]
    pretrain_limit: int | None  # documents per pretraining source (a hub dataset can be huge)
    chat_sources: list[SourceEntry]
    synthetic_count: int  # conversations of each synthetic source
    chat_val_fraction: float
    chat_eval: SourceEntry | None  # a held-out file; None: held-out synthetic tool and chat conversations
    eval_conversations: int
    pretrain: StageSettings
    chat: StageSettings

    @property
    def budget_seconds(self) -> float:
        return parse_duration(self.budget, "--budget")

    def stage_seconds(self, stage: str) -> int:
        """A training stage's wall-clock share (the rest of the budget is for the tokenizer, data and eval)."""
        share = self.pretrain.share if stage == "pretrain" else self.chat.share
        return max(1, round(self.budget_seconds * share))

    def identity(self) -> dict[str, Any]:
        """What a resumed recipe must share with the one that started: not the budget, which may grow."""
        identity = {"profile": self.profile, "vocab_size": self.vocab_size,
                    "pretrain": [str(entry) for entry in self.pretrain_sources], "pretrain_limit": self.pretrain_limit,
                    "chat": [str(entry) for entry in self.chat_sources], "synthetic_count": self.synthetic_count,
                    "pretrain_settings": self.pretrain.settings, "chat_settings": self.chat.settings}
        if self.tokenizer_chat_fraction != DEFAULT_CHAT_FRACTION:  # absent by default: older runs still resume
            identity["tokenizer_chat_fraction"] = self.tokenizer_chat_fraction
        return identity

    def describe(self) -> list[str]:
        """The plan, line by line, for --dry-run and the start of a run."""
        eval_source = (f"the first {self.eval_conversations} conversations of {self.chat_eval.source}" if self.chat_eval
                       else f"{self.eval_conversations} held-out synthetic-tools and synthetic-chat conversations")
        return [
            f"recipe      {self.recipe}",
            f"profile     {self.profile}, budget {self.budget}: pretraining {self.stage_seconds('pretrain')}s, "
            f"chat fine-tuning {self.stage_seconds('chat')}s",
            f"tokenizer   {self.vocab_size} tokens, trained on {self.tokenizer_sample_chars:,} characters sampled "
            f"from the pretraining text and the chat data ({self.tokenizer_chat_fraction:.0%} chat)",
            f"pretrain    {', '.join(e.source for e in self.pretrain_sources)}"
            f"{f' (first {self.pretrain_limit:,} documents each)' if self.pretrain_limit else ''}"
            f"{'; --set ' + ' '.join(self.pretrain.settings) if self.pretrain.settings else ''} -> {self.out / 'base'}",
            f"chat        {', '.join(str(e) for e in self.chat_sources)}"
            f"{'; --set ' + ' '.join(self.chat.settings) if self.chat.settings else ''} -> {self.out / 'chat'}",
            f"eval        {eval_source}: turn-taking and tool calls",
        ]


def builtin_recipe(profile: str) -> Path:
    """The recipe shipped for a profile (`cognimamba/recipes/chat_PROFILE.toml`)."""
    path = Path(str(resources.files("cognimamba.recipes") / f"chat_{profile}.toml"))
    if not path.is_file():
        shipped = sorted(p.stem.removeprefix("chat_") for p in path.parent.glob("chat_*.toml"))
        raise CogniError(f"--profile {profile}: no built-in chat recipe; choose one of {', '.join(shipped)} "
                         "or pass --recipe FILE")
    return path


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CogniError(f"--recipe {path}: file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CogniError(f"{path}: not valid TOML ({error})") from error


def _value(data: dict[str, Any], key: str, kind: type, where: Path) -> Any:
    section, _, name = key.rpartition(".")
    table = data.get(section, {}) if section else data
    if not isinstance(table, dict) or name not in table:
        raise CogniError(f"{where}: missing {key}; copy a shipped recipe (cogni recipe chat --dry-run shows which)")
    value = table[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CogniError(f"{where}: {key} = {value!r} should be a {kind.__name__}")
    return value


def _stage(data: dict[str, Any], name: str, where: Path) -> StageSettings:
    share = _value(data, f"{name}.share", float, where)
    settings = data.get(name, {}).get("settings", [])
    if not 0 < share <= 1:
        raise CogniError(f"{where}: {name}.share = {share} must be in (0, 1]")
    if not isinstance(settings, list) or not all(isinstance(item, str) and "=" in item for item in settings):
        raise CogniError(f"{where}: {name}.settings must be a list of \"section.field=value\" strings")
    return StageSettings(share, list(settings))


def resolve_plan(profile: str | None, recipe: Path | None, out: Path | None, pretrain: list[str] | None,
                 chat: list[str] | None, budget: str | None, chat_eval: str | None) -> RecipePlan:
    """The recipe file (the profile's built-in one unless --recipe), with the command line on top; the run goes
    to --out, or to a folder named after the profile, so running the same command again finds it."""
    if profile == "auto":
        profile = detect_profile()
    path = Path(recipe) if recipe is not None else builtin_recipe(profile or "cpu")
    data = _load(path)
    profile = profile or str(data.get("profile", "cpu"))
    get_profile(profile)  # an unknown name is refused here, in one line
    out = out or default_runs_dir() / f"recipe-chat-{profile}"
    pretrain_texts = pretrain or _value(data, "pretrain.sources", list, path)
    chat_texts = chat or _value(data, "chat.sources", list, path)
    plan = RecipePlan(
        recipe=path, profile=profile, out=Path(out), budget=budget or _value(data, "budget", str, path),
        vocab_size=_value(data, "tokenizer.vocab_size", int, path),
        tokenizer_sample_chars=_value(data, "tokenizer.sample_chars", int, path),
        tokenizer_chat_fraction=float(data.get("tokenizer", {}).get("chat_fraction", DEFAULT_CHAT_FRACTION)),
        pretrain_sources=[SourceEntry.parse(str(text), "--pretrain") for text in pretrain_texts],
        pretrain_limit=data.get("pretrain", {}).get("limit"),
        chat_sources=[SourceEntry.parse(str(text), "--chat") for text in chat_texts],
        synthetic_count=_value(data, "chat.synthetic_count", int, path),
        chat_val_fraction=_value(data, "chat.val_fraction", float, path),
        chat_eval=SourceEntry.parse(chat_eval, "--chat-eval") if chat_eval else None,
        eval_conversations=_value(data, "eval.conversations", int, path),
        pretrain=_stage(data, "pretrain", path), chat=_stage(data, "chat", path))
    plan.budget_seconds  # noqa: B018 - a bad --budget is reported before any work
    if not 0 <= plan.tokenizer_chat_fraction <= 1:
        raise CogniError(f"{path}: tokenizer.chat_fraction = {plan.tokenizer_chat_fraction:g} must be in [0, 1]")
    if plan.pretrain.share + plan.chat.share > 1:
        raise CogniError(f"{path}: pretrain.share + chat.share = {plan.pretrain.share + plan.chat.share:g} is more "
                         "than the whole budget")
    check_sources(plan)
    return plan


def check_sources(plan: RecipePlan) -> None:
    """Unknown names, missing files and wrong formats are reported before any work (no download happens here)."""
    if any(entry.format for entry in plan.pretrain_sources):
        raise CogniError("--pretrain: a pretraining source is plain text; a :FORMAT is for --chat sources")
    for entry in plan.pretrain_sources:
        resolve_source(entry.source)
    for entry in plan.chat_sources:
        resolve_chat_source(entry.source, entry.format)
    if plan.chat_eval is not None:
        resolve_chat_source(plan.chat_eval.source, plan.chat_eval.format)
