"""`cogni prepare` for chat data: conversations -> tokens + loss mask, through the one ChatML renderer.

Each conversation is rendered by `chat_format.render_segments`, each segment tokenized on its own, and the
segment's trained flag copied onto its tokens: only assistant replies (their text, `<tool_call>` blocks and
closing `<|im_end|>`) are trained. Conversations are packed back to back into one stream, each followed by an
untrained `<|endoftext|>`, so no loss ever reaches across into the next conversation. Where each
conversation and each of its user turns starts is written too: training windows start at a conversation
start and drop whole oldest turns, never the system turn (data/conversation_fit.py).

Several sources mix by weight (`--mix a:0.7,b:0.3` or a TOML file of `[[data.mix]]` tables): the training
stream holds their conversations in those proportions, smaller sources repeated until every source has
been used in full. Validation conversations are taken out of each source before mixing, so a repeated
conversation never lands on both sides.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from tokenizers import Tokenizer

from cognimamba.chat.format import render_segments
from cognimamba.config.overrides import load_toml
from cognimamba.data.chat_sources import (
    ChatSource,
    Conversation,
    ReadStats,
    check_reachable,
    iter_conversations,
    resolve_chat_source,
)
from cognimamba.data.conversation_fit import REPORTED_CONTEXTS, ConversationBounds, FitCounts
from cognimamba.data.data_dir import (
    INDEXED_CHAT_VERSION,
    DataDir,
    TokenWriter,
    commit_staging,
    staging_dir,
    token_dtype,
)
from cognimamba.data.prepare import PrepareResult, check_split_sizes, check_val_fraction, choose_held_out
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import (
    END_OF_TEXT,
    IM_START,
    encode_batch,
    load_tokenizer,
    special_id,
    tokenizer_hash,
)
from cognimamba.system.console import make_progress
from cognimamba.system.paths import prepared_corpus_dir

CHAT_DATA_VERSION = INDEXED_CHAT_VERSION  # bump on a rendering, packing or split change: cached dirs rebuild
USER_TURN = f"{IM_START}user\n"
ENCODE_BATCH = 256
HUB_VAL_LIMIT = 2000  # conversations taken from a hub dataset's own validation split


@dataclass
class MixEntry:
    """One source of a mix and how to read it."""

    source: str
    weight: float = 1.0
    format: str | None = None
    system: str | None = None
    limit: int | None = None
    count: int | None = None


@dataclass
class ChatPrepareOptions:
    sources: list[MixEntry]
    tokenizer: Path | None
    val: str | None = None
    val_format: str | None = None
    val_fraction: float | None = None
    out: Path | None = None
    force: bool = False
    seed: int = 0


def parse_mix(text: str, format: str | None = None, system: str | None = None, limit: int | None = None,
              count: int | None = None) -> list[MixEntry]:
    """`a:0.7,b:0.3` (a weight-less source counts 1), or the path of a TOML file with [[data.mix]] tables."""
    if text.strip().lower().endswith(".toml"):
        return load_mix_file(Path(text.strip()), format, system, limit, count)
    entries = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        source, sep, weight_text = part.rpartition(":")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            source, weight = part, 1.0  # a colon inside a path, not a weight
        if not sep:
            source = part
        entries.append(MixEntry(source.strip(), weight, format, system, limit, count))
    _check_entries(entries, f"--mix {text!r}")
    return entries


MIX_KEYS = {"source", "weight", "format", "system", "limit", "count"}


def load_mix_file(path: Path, format: str | None = None, system: str | None = None, limit: int | None = None,
                  count: int | None = None) -> list[MixEntry]:
    """A TOML data section: `[data] system = "..."` and one `[[data.mix]]` table per source."""

    data = load_toml(path).get("data")
    if not isinstance(data, dict) or not isinstance(data.get("mix"), list):
        raise CogniError(f"{path}: needs a [data] section with [[data.mix]] tables (source = ..., weight = ...)")
    unknown = sorted(set(data) - {"mix", "system"})
    if unknown:
        raise CogniError(f"{path}: unknown key data.{unknown[0]}; allowed: data.system and [[data.mix]] tables")
    default_system = data.get("system", system)
    entries = []
    for number, table in enumerate(data["mix"], start=1):
        where = f"{path}: [[data.mix]] #{number}"
        if not isinstance(table, dict) or "source" not in table:
            raise CogniError(f"{where}: needs source = \"NAME or FILE\"")
        bad = sorted(set(table) - MIX_KEYS)
        if bad:
            raise CogniError(f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(MIX_KEYS))}")
        source = str(table["source"])
        if not Path(source).is_absolute() and (path.parent / source).is_file():
            source = str(path.parent / source)  # files are relative to the TOML file
        try:
            entries.append(MixEntry(source, float(table.get("weight", 1.0)), table.get("format", format),
                                    table.get("system", default_system), table.get("limit", limit),
                                    table.get("count", count)))
        except (TypeError, ValueError) as error:
            raise CogniError(f"{where}: weight must be a number ({error})") from error
    _check_entries(entries, str(path))
    return entries


def _check_entries(entries: list[MixEntry], where: str) -> None:
    if not entries:
        raise CogniError(f"{where}: no sources; write it as a:0.7,b:0.3")
    for entry in entries:
        if not entry.weight > 0:
            raise CogniError(f"{where}: weight of {entry.source} is {entry.weight}; weights must be positive")
        for name, value in (("limit", entry.limit), ("count", entry.count)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise CogniError(f"{where}: {name} of {entry.source} must be a positive integer")


@dataclass
class EncodedConversation:
    ids: list[int]
    mask: list[int]  # 1 = trained (assistant replies)
    turn_offsets: list[int]  # where each user turn starts, in tokens from the conversation's start


def encode_conversation(tokenizer: Tokenizer, conversation: Conversation) -> tuple[list[int], list[int]]:
    """Token ids and the loss mask (1 = trained) of one conversation, without the trailing separator."""
    encoded = _encode_many(tokenizer, [conversation])[0]
    return encoded.ids, encoded.mask


def _encode_many(tokenizer: Tokenizer, conversations: list[Conversation]) -> list[EncodedConversation]:
    rendered = []
    for conversation in conversations:
        try:
            rendered.append(render_segments(conversation.messages, conversation.tools))
        except (ValueError, KeyError, TypeError) as error:
            raise CogniError(f"a conversation could not be rendered ({error})") from error
    texts = [text for segments in rendered for text, _ in segments]
    encodings = iter(encode_batch(tokenizer, texts))
    results = []
    for segments in rendered:
        encoded = EncodedConversation([], [], [])
        for text, trained in segments:
            piece = next(encodings)
            if text.startswith(USER_TURN):
                encoded.turn_offsets.append(len(encoded.ids))
            encoded.ids += piece
            encoded.mask += [int(trained)] * len(piece)
        results.append(encoded)
    return results


def mix(factories: list[Callable[[], Iterator[Conversation]]], weights: list[float]) -> Iterator[Conversation]:
    """Smooth weighted round-robin over sources, restarting each that runs out until all have run out once."""
    if len(factories) == 1:
        yield from factories[0]()
        return
    iterators = [factory() for factory in factories]
    finished = [False] * len(factories)
    credit = [0.0] * len(factories)
    total = sum(weights)
    while True:
        for index, weight in enumerate(weights):
            credit[index] += weight
        pick = max(range(len(weights)), key=lambda index: credit[index])
        credit[pick] -= total
        try:
            yield next(iterators[pick])
            continue
        except StopIteration:
            finished[pick] = True
        if all(finished):
            return
        iterators[pick] = factories[pick]()
        try:
            yield next(iterators[pick])
        except StopIteration:
            return  # an empty source; iter_conversations already refused sources with nothing in them


@dataclass
class _SplitPlan:
    """Where each source's validation conversations come from."""

    fraction: float
    val_source: ChatSource | None
    hub_val: set[str] = field(default_factory=set)  # labels of named sources using the hub's own val split
    held_out: dict[str, frozenset[int]] = field(default_factory=dict)  # by label: indices --val-fraction holds out


def _conversations(source: ChatSource, want: str, plan: _SplitPlan, stats: ReadStats) -> Iterator[Conversation]:
    if plan.val_source is not None:
        if want == "train":
            yield from iter_conversations(source, stats=stats)
        return
    if source.label in plan.hub_val:
        assert source.named is not None and source.named.val_split
        if want == "train":
            yield from iter_conversations(source, split=source.named.train_split, stats=stats)
        else:
            limit = min(source.limit or HUB_VAL_LIMIT, HUB_VAL_LIMIT)
            val = ChatSource(source.label, source.format, named=source.named, system=source.system, limit=limit)
            yield from iter_conversations(val, split=source.named.val_split, stats=stats)
        return
    for index, conversation in enumerate(iter_conversations(source, stats=stats)):
        if (index in plan.held_out.get(source.label, frozenset())) == (want == "val"):
            yield conversation


def _cache_key(sources: list[ChatSource], weights: list[float], plan: _SplitPlan, tokenizer: Tokenizer,
               seed: int) -> str:
    material = {
        "kind": "chat", "version": CHAT_DATA_VERSION, "seed": seed, "fraction": plan.fraction,
        "sources": [{**source.identity(), "weight": weight} for source, weight in zip(sources, weights, strict=True)],
        "val": plan.val_source.identity() if plan.val_source else None, "hub_val": sorted(plan.hub_val),
        "tokenizer": tokenizer_hash(tokenizer),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _resolve_tokenizer(path: Path | None) -> Tokenizer:
    if path is None:
        raise CogniError("chat data is fine-tuning data: pass --tokenizer RUN/tokenizer.json of the run you will "
                         "fine-tune, so the tokens match its vocabulary")
    path = Path(path)
    return load_tokenizer(path / "tokenizer.json" if path.is_dir() else path)


def prepare_chat(options: ChatPrepareOptions, console: Console | None = None) -> PrepareResult:
    console = console or Console(stderr=True)
    tokenizer = _resolve_tokenizer(options.tokenizer)
    sources = [resolve_chat_source(entry.source, entry.format, entry.system, entry.limit, entry.count, options.seed)
               for entry in options.sources]
    weights = [entry.weight for entry in options.sources]
    if len({source.label for source in sources}) != len(sources):
        raise CogniError("the same source is listed twice in the mix; give it one weight")
    check_val_fraction(options.val_fraction)
    val_source = None
    if options.val:
        val_source = resolve_chat_source(options.val, options.val_format, options.sources[0].system)
    hub_val = {source.label for source in sources
               if source.named is not None and source.named.val_split and options.val_fraction is None}
    fraction = options.val_fraction if options.val_fraction is not None else 0.05
    plan = _SplitPlan(fraction=0.0 if val_source else fraction, val_source=val_source,
                      hub_val=set() if val_source else hub_val)
    key = _cache_key(sources, weights, plan, tokenizer, options.seed)
    label = sources[0].label if len(sources) == 1 else "mix"
    out = Path(options.out) if options.out else prepared_corpus_dir(label, key)
    existing = None if options.force else DataDir.reusable(out, key)
    if existing is not None:
        return PrepareResult(existing, reused=True)

    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    read_stats = {source.label: ReadStats() for source in sources}
    counts: dict[str, Any] = {}
    for source in [*sources, *([val_source] if val_source else [])]:
        check_reachable(source)
    for source in sources:
        if plan.fraction > 0 and source.label not in plan.hub_val:
            count = sum(1 for _ in iter_conversations(source, stats=ReadStats()))
            if options.val_fraction is not None:
                check_split_sizes(count, plan.fraction, source.label, "conversations")
            plan.held_out[source.label] = choose_held_out(count, plan.fraction, options.seed)
    # Only a source's first pass counts in its read stats; repeats in the mix read it again.
    passes = {source.label: 0 for source in sources}

    def first_pass_stats(label: str) -> ReadStats:
        passes[label] += 1
        return read_stats[label] if passes[label] == 1 else ReadStats()

    factories = [(lambda s=source: _conversations(s, "train", plan, first_pass_stats(s.label))) for source in sources]
    splits: dict[str, Iterator[Conversation]] = {"train": mix(factories, weights)}
    if val_source is not None:
        splits["val"] = iter_conversations(val_source, stats=ReadStats())
    else:
        splits["val"] = (conversation for source in sources
                         for conversation in _conversations(source, "val", plan, ReadStats()))
    staging = staging_dir(out)
    try:
        tokenizer.save(str(staging / "tokenizer.json"))
        with make_progress(console) as progress:
            for split, conversations in splits.items():
                task = progress.add_task(f"tokenizing {split} conversations", total=None)
                counts.update(_write_split(staging, split, conversations, tokenizer, dtype,
                                           lambda done, task=task: progress.update(task, completed=done)))
        if counts["train_tokens"] == 0:
            raise CogniError("no conversations to train on")
        skipped = {label: {"read": stats.read, "skipped": stats.skipped, "first_problem": stats.first_problem}
                   for label, stats in read_stats.items()}
        meta = {
            "format": "chat", "key": key, "chat_data_version": CHAT_DATA_VERSION,
            "sources": [{"source": entry.source, "label": source.label, "format": source.format,
                         "weight": entry.weight, "system": source.system, "limit": source.limit,
                         **({"count": source.count} if source.count else {}), **skipped[source.label]}
                        for entry, source in zip(options.sources, sources, strict=True)],
            "val_source": options.val, "val_fraction": plan.fraction, "hub_val_split": sorted(plan.hub_val),
            "vocab_size": vocab_size, "dtype": dtype.name, "tokenizer_hash": tokenizer_hash(tokenizer),
            "end_of_text_id": special_id(tokenizer, END_OF_TEXT),
            "trained_fraction": counts["train_trained_tokens"] / counts["train_tokens"], **counts,
        }
        commit_staging(out, staging, meta)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    result = PrepareResult(DataDir.open(out), reused=False)
    for split in ("train", "val"):
        fits = counts.get(f"{split}_conversations_over_context", {})
        over = [f"{context}: {fit['trimmed']} trimmed, {fit['skipped']} skipped" for context, fit in fits.items()
                if fit["trimmed"] or fit["skipped"]]
        if over:
            console.print(f"{split}: {counts[f'{split}_conversations']} conversations; longer than a context of "
                          f"{'; '.join(over)} (trimmed: system turn kept, oldest turns dropped)", highlight=False)
    for label, stats in read_stats.items():
        if stats.skipped:
            console.print(f"[yellow]{label}: skipped {stats.skipped} of {stats.read} records "
                          f"(first: {stats.first_problem})", highlight=False)
    return result


def _write_split(staging: Path, split: str, conversations: Iterator[Conversation], tokenizer: Tokenizer,
                 dtype: Any, report: Callable[[int], None]) -> dict[str, Any]:
    """Tokens and mask of one split, each conversation followed by an untrained <|endoftext|>."""
    end_of_text = special_id(tokenizer, END_OF_TEXT)
    writer = TokenWriter(staging, split, dtype, with_mask=True, with_index=True)
    lengths: list[int] = []
    starts: list[int] = []
    turn_starts: list[int] = []
    batch: list[Conversation] = []
    for conversation in itertools.chain(conversations, [None]):
        if conversation is not None:
            batch.append(conversation)
        if batch and (conversation is None or len(batch) >= ENCODE_BATCH):
            for encoded in _encode_many(tokenizer, batch):
                starts.append(writer.count)
                turn_starts += [writer.count + offset for offset in encoded.turn_offsets]
                writer.write_conversation([*encoded.ids, end_of_text], [*encoded.mask, 0], encoded.turn_offsets)
                lengths.append(len(encoded.ids) + 1)
            batch = []
            report(len(lengths))
    writer.close()
    ordered = sorted(lengths)
    over_context = {}
    if starts:
        bounds = ConversationBounds.from_offsets(starts, turn_starts, writer.count)
        for context in REPORTED_CONTEXTS:
            fit = FitCounts.of(bounds, context + 1)  # a window holds context + 1 tokens (inputs and targets)
            over_context[str(context)] = {"trimmed": fit.trimmed, "skipped": fit.skipped}
    return {
        f"{split}_tokens": writer.count,
        f"{split}_trained_tokens": writer.masked_in,
        f"{split}_trained_fraction": writer.masked_in / writer.count if writer.count else 0.0,
        f"{split}_conversations": len(lengths),
        f"{split}_conversation_tokens": {
            "mean": round(sum(ordered) / len(ordered), 1) if ordered else 0,
            "p90": ordered[int(0.9 * (len(ordered) - 1))] if ordered else 0,
            "max": ordered[-1] if ordered else 0,
        },
        f"{split}_conversations_over_context": over_context,
    }
