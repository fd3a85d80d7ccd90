"""`cogni prepare SOURCE`: corpus -> data dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.commands.common import stderr, stdout


def prepare_command(
    source: Annotated[str, typer.Argument(help="a named dataset (tinystories, tinyshakespeare, code) or a .txt/.json/.jsonl/.parquet file")],
    val: Annotated[str | None, typer.Option("--val", help="held-out file for validation")] = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction", help="hold out this fraction of documents")] = None,
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", help="BPE vocabulary size (default: the profile's)")] = None,
    profile: Annotated[str, typer.Option("--profile", help="profile whose default vocab size to use")] = "cpu",
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", help="reuse this tokenizer.json instead of training one")] = None,
    text_field: Annotated[str | None, typer.Option("--text-field", help="field holding the text in json/jsonl/parquet records")] = None,
    separator: Annotated[str | None, typer.Option("--separator", help="document separator in .txt files (default: blank lines)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="take only the first N documents")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output data dir (default: under the user cache dir)")] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even if a matching result exists")] = False,
) -> None:
    """Train or reuse a byte-level BPE tokenizer and write memory-mapped token shards."""
    from cognimamba.data.prepare import PrepareOptions, prepare_text
    from cognimamba.profiles import get_profile

    if limit is not None and limit < 1:
        from cognimamba.errors import CogniError

        raise CogniError(f"--limit {limit} must be at least 1")
    vocab = vocab_size or get_profile(profile).model.vocab_size
    options = PrepareOptions(source=source, val=val, val_fraction=val_fraction, vocab_size=vocab, tokenizer=tokenizer,
                             text_field=text_field, separator=separator, limit=limit, out=out, force=force)
    result = prepare_text(options, stderr())
    meta = result.data_dir.meta
    verb = "reused" if result.reused else "wrote"
    stderr().print(f"{verb} {result.data_dir.path}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, "
                   f"vocab {meta['vocab_size']:,}", highlight=False)
    stdout().print(str(result.data_dir.path), highlight=False, soft_wrap=True)
