"""`cogni prepare SOURCE`: corpus -> data dir."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cognimamba.cli.commands.common import stderr, stdout

if TYPE_CHECKING:
    from cognimamba.data.data_dir import DataDir


def prepare_command(
    source: Annotated[str | None, typer.Argument(
        help="a named dataset (text: tinystories, tinyshakespeare, code; chat: alpaca, dolly, ultrachat, codealpaca, "
             "glaive; or synthetic-tools, synthetic-chat, synthetic-functions) or a .txt/.json/.jsonl/.parquet file")] = None,
    val: Annotated[str | None, typer.Option("--val", help="held-out file for validation")] = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction", help="hold out this fraction of documents")] = None,
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", help="BPE vocabulary size (default: the profile's)")] = None,
    profile: Annotated[str, typer.Option("--profile", help="profile whose default vocab size to use")] = "cpu",
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", help="reuse this tokenizer.json instead of training one")] = None,
    text_field: Annotated[str | None, typer.Option("--text-field", help="field holding the text in json/jsonl/parquet records")] = None,
    separator: Annotated[str | None, typer.Option("--separator", help="document separator in .txt files (default: <|endoftext|> where it ends a file's lines, else blank lines); a --val file is split at it only if it contains it")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="take only the first N documents")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output data dir (default: under the user cache dir)")] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even if a matching result exists")] = False,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="skip and count malformed JSON/JSONL records")] = False,
    format: Annotated[str | None, typer.Option("--format", help="chat format: alpaca|sharegpt|messages")] = None,
    mix: Annotated[str | None, typer.Option("--mix", help="chat mix: a:0.7,b:0.3 or mix.toml")] = None,
    system: Annotated[str | None, typer.Option("--system", help="system prompt for chats without one")] = None,
    count: Annotated[int | None, typer.Option("--count", help="conversations of a synthetic source")] = None,
) -> None:
    """Train or reuse a byte-level BPE tokenizer and write memory-mapped token shards.

    Chat data (a chat dataset, --format, or --mix) is tokenized with --tokenizer RUN/tokenizer.json, and only
    the assistant's tokens are trained."""
    from cognimamba.errors import CogniError

    if mix is not None or format is not None or _is_chat_source(source):
        _prepare_chat(source, mix, format, system, count, val, val_fraction, tokenizer, limit, out, force,
                      {"--vocab-size": vocab_size, "--text-field": text_field, "--separator": separator,
                       "--skip-bad": skip_bad or None})
        return
    if source is None:
        raise CogniError("nothing to prepare: pass SOURCE (a named dataset or a file), or --mix a:0.7,b:0.3")
    for flag, value in (("--system", system), ("--count", count)):
        if value is not None:
            raise CogniError(f"{flag} is for chat data; add --format (alpaca, sharegpt, messages) for a chat file")
    from cognimamba.config.profiles import get_profile
    from cognimamba.data.prepare import PrepareOptions, prepare_text

    if limit is not None and limit < 1:
        raise CogniError(f"--limit {limit} must be at least 1")
    vocab = vocab_size or get_profile(profile).model.vocab_size
    options = PrepareOptions(source=source, val=val, val_fraction=val_fraction, vocab_size=vocab, tokenizer=tokenizer,
                             text_field=text_field, separator=separator, limit=limit, out=out, force=force,
                             skip_bad=skip_bad)
    result = prepare_text(options, stderr())
    verb = "reused" if result.reused else "wrote"
    splits = "; ".join(_split_summary(result.data_dir, split) for split in ("train", "val"))
    stderr().print(f"{verb} {result.data_dir.path}: {splits}; vocab {result.data_dir.vocab_size:,}", highlight=False,
                   soft_wrap=True)
    stdout().print(str(result.data_dir.path), highlight=False, soft_wrap=True)


def _split_summary(data_dir: DataDir, split: str) -> str:
    """'train: 2,316 documents (separator '<|endoftext|>'), 512,000 tokens': each file's rule is said, since a
    validation file may be laid out unlike the training file."""
    rule = data_dir.document_split(split)
    documents = f"{data_dir.meta.get(f'{split}_documents', 0):,} documents" + (f" ({rule})" if rule else "")
    return f"{split}: {documents}, {data_dir.meta[f'{split}_tokens']:,} tokens"


def _is_chat_source(source: str | None) -> bool:
    from cognimamba.data.chat_sources import SYNTHETIC_SOURCES, chat_source_names

    return source is not None and (source in SYNTHETIC_SOURCES or source in chat_source_names())


def _prepare_chat(source: str | None, mix: str | None, format: str | None, system: str | None, count: int | None,
                  val: str | None, val_fraction: float | None, tokenizer: Path | None, limit: int | None,
                  out: Path | None, force: bool, text_only: dict[str, object]) -> None:
    from cognimamba.data.chat_sources import SYNTHETIC_SOURCES
    from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, parse_mix, prepare_chat
    from cognimamba.errors import CogniError

    for flag, value in text_only.items():
        if value is not None:
            raise CogniError(f"{flag} is for plain-text data; chat data uses the vocabulary of --tokenizer")
    for flag, value in (("--limit", limit), ("--count", count)):
        if value is not None and value < 1:
            raise CogniError(f"{flag} {value} must be at least 1")
    if mix is not None and source is not None:
        raise CogniError(f"pass either SOURCE ({source}) or --mix, not both; add it to the mix instead")
    if source is None and mix is None:
        raise CogniError("nothing to prepare: pass SOURCE or --mix a:0.7,b:0.3")
    entries = parse_mix(mix, format, system, limit, count) if mix else [MixEntry(str(source), 1.0, format, system,
                                                                                   limit, count)]
    if count is not None and not any(entry.source in SYNTHETIC_SOURCES for entry in entries):
        raise CogniError(f"--count is the size of a synthetic source ({', '.join(SYNTHETIC_SOURCES)}); none is among "
                         "the sources")
    options = ChatPrepareOptions(entries, tokenizer, val=val, val_format=format, val_fraction=val_fraction,
                                 out=out, force=force)
    result = prepare_chat(options, stderr())
    meta = result.data_dir.meta
    verb = "reused" if result.reused else "wrote"
    stderr().print(f"{verb} {result.data_dir.path}: {meta['train_conversations']:,} train / "
                   f"{meta['val_conversations']:,} val conversations, {meta['train_tokens']:,} train tokens of which "
                   f"{meta['trained_fraction']:.0%} are trained (assistant turns)", highlight=False)
    stdout().print(str(result.data_dir.path), highlight=False, soft_wrap=True)
