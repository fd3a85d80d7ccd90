"""`cogni prepare` for plain text: train (or reuse) the tokenizer, tokenize in parallel, write the data dir."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cognimamba.data.data_dir import (
    SPLIT_PER_FILE_TEXT_VERSION,
    DataDir,
    TokenWriter,
    commit_staging,
    staging_dir,
    token_dtype,
)
from cognimamba.data.sources import SourceSpec, iter_documents, read_json_records, resolve_source
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import (
    END_OF_TEXT,
    TOKENIZER_SPLIT,
    load_tokenizer,
    special_id,
    tokenizer_hash,
    train_tokenizer,
)
from cognimamba.system.console import make_progress
from cognimamba.system.paths import prepared_corpus_dir

TOKENIZER_SAMPLE_CHARS = 200_000_000  # enough text to learn merges; larger corpora are only tokenized
DEFAULT_VAL_FRACTION = 0.05
# Bump when the choice of held-out documents changes, so a cached data dir with the old split is not reused.
SPLIT_VERSION = 2
TEXT_DATA_VERSION = SPLIT_PER_FILE_TEXT_VERSION  # bump on a change to what a text dir holds: cached dirs rebuild
ENCODE_BATCH = 1024


@dataclass
class PrepareOptions:
    source: str
    val: str | None = None
    val_fraction: float | None = None
    vocab_size: int = 8192
    tokenizer: Path | None = None
    text_field: str | None = None
    separator: str | None = None
    limit: int | None = None
    out: Path | None = None
    force: bool = False
    skip_bad: bool = False  # skip (and count) malformed JSON/JSONL records instead of stopping at the first
    seed: int = 0  # which documents --val-fraction holds out


@dataclass
class PrepareResult:
    data_dir: DataDir
    reused: bool


def held_out_count(count: int, fraction: float) -> int:
    """The documents `fraction` of `count` holds out, rounded half up."""
    return math.floor(count * fraction + 0.5)


def choose_held_out(count: int, fraction: float, seed: int) -> frozenset[int]:
    """Indices of the validation documents: exactly `fraction` of them (rounded), drawn with `seed`.

    Drawn rather than every Nth, so a corpus with a period of its own (alternating sources, say) still
    gives a validation set like the rest.
    """
    return frozenset(random.Random(seed).sample(range(count), held_out_count(count, fraction)))


def check_val_fraction(fraction: float | None) -> None:
    if fraction is not None and not 0 <= fraction < 1:
        raise CogniError(f"--val-fraction {fraction} must be between 0 and 1 (the share of documents held out "
                         "for validation; 0 holds none out)")


def check_split_sizes(count: int, fraction: float, source: str, unit: str = "documents") -> None:
    """A --val-fraction that leaves the training or the validation split empty is refused, naming the counts."""
    held_out = held_out_count(count, fraction)
    if count and held_out == count:
        raise CogniError(f"--val-fraction {fraction} holds out all {count} {unit} of {source}, leaving none to "
                         f"train on; use a smaller fraction or --val FILE")
    if count and held_out == 0:
        raise CogniError(f"--val-fraction {fraction} holds out none of the {count} {unit} of {source}; use at "
                         f"least {1 / count:.2g}, or --val FILE")


def _cache_key(options: PrepareOptions, train: SourceSpec, val: SourceSpec | None, fraction: float) -> str:
    tokenizer_id = None
    if options.tokenizer is not None:
        tokenizer_id = tokenizer_hash(load_tokenizer(options.tokenizer))
    material = {
        "kind": "text", "train": train.identity(), "val": val.identity() if val else None,
        "val_fraction": fraction, "vocab_size": options.vocab_size, "tokenizer": tokenizer_id,
        "split_version": SPLIT_VERSION, "seed": options.seed, "text_data_version": TEXT_DATA_VERSION,
        "tokenizer_split": TOKENIZER_SPLIT if tokenizer_id is None else None,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _split(train: SourceSpec, val: SourceSpec | None, held_out: frozenset[int], want: str) -> Iterator[str]:
    """Documents of one split: a separate val source, the hub's val split, or the held-out documents."""
    if val is not None:
        yield from (iter_documents(train) if want == "train" else iter_documents(val))
        return
    if train.named is not None and train.named.val_split and not held_out:  # no --val-fraction: the hub's split
        split = train.named.train_split if want == "train" else train.named.val_split
        yield from iter_documents(train, split=split)
        return
    for index, document in enumerate(iter_documents(train)):
        if (index in held_out) == (want == "val"):
            yield document


def document_split(spec: SourceSpec) -> str:
    """How a source is cut into documents (each followed by <|endoftext|> in the tokens), as meta.json says it.

    `cogni test-model --eval-file` reads its file through prepare too, so its JSON can name the same rule.
    """
    if spec.path is not None and spec.path.suffix.lower() == ".txt":
        return f"separator {spec.separator!r}" if spec.separator else "blank lines"
    return f"one record per document (field {spec.text_field!r})"


def _sample_for_tokenizer(documents: Iterator[str]) -> Iterator[str]:
    seen = 0
    for document in documents:
        yield document
        seen += len(document)
        if seen >= TOKENIZER_SAMPLE_CHARS:
            return


def _report_skipped(specs: list[SourceSpec | None], console: Console) -> int:
    """With --skip-bad: count the malformed JSON/JSONL records that will be left out, and say so."""
    total = 0
    for spec in specs:
        if spec is None or not spec.skip_bad or spec.path is None:
            continue
        if spec.path.suffix.lower() not in (".json", ".jsonl"):
            continue
        records, problems = read_json_records(spec.path, spec.text_field or "text")
        if problems:
            console.print(f"[yellow]{spec.path}: skipping {len(problems)} bad records of "
                          f"{len(records) + len(problems)} (first: {problems[0]})", highlight=False, soft_wrap=True)
        total += len(problems)
    return total


def prepare_text(options: PrepareOptions, console: Console | None = None) -> PrepareResult:
    console = console or Console(stderr=True)
    train = resolve_source(options.source, options.text_field, options.separator, options.limit, options.skip_bad)
    # --separator serves the validation file only where it occurs there: the two may be laid out differently
    val = (resolve_source(options.val, options.text_field, options.separator, None, options.skip_bad,
                          separator_if_present=True) if options.val else None)
    check_val_fraction(options.val_fraction)
    if options.val_fraction is not None:
        fraction = options.val_fraction
    elif val is None and not (train.named and train.named.val_split):
        fraction = DEFAULT_VAL_FRACTION
    else:
        fraction = 0.0
    key = _cache_key(options, train, val, fraction)
    out = Path(options.out) if options.out else prepared_corpus_dir(train.label, key)
    existing = None if options.force else DataDir.reusable(out, key)
    if existing is not None:
        return PrepareResult(existing, reused=True)
    skipped = _report_skipped([train, val], console)
    held_out: frozenset[int] = frozenset()
    if val is None and fraction > 0:
        count = sum(1 for _ in iter_documents(train))
        if options.val_fraction is not None:
            check_split_sizes(count, fraction, options.source)
        held_out = choose_held_out(count, fraction, options.seed)
    staging = staging_dir(out)
    try:
        with make_progress(console) as progress:
            if options.tokenizer is not None:
                tokenizer = load_tokenizer(options.tokenizer)
            else:
                task = progress.add_task("training tokenizer", total=None)
                tokenizer = train_tokenizer(_sample_for_tokenizer(_split(train, val, held_out, "train")),
                                            options.vocab_size)
                progress.update(task, total=1, completed=1)
            vocab_size = tokenizer.get_vocab_size()
            tokenizer.save(str(staging / "tokenizer.json"))
            end_of_text = special_id(tokenizer, END_OF_TEXT)
            dtype = token_dtype(vocab_size)
            counts: dict[str, Any] = {}
            for split in ("train", "val"):
                writer = TokenWriter(staging, split, dtype)
                task = progress.add_task(f"tokenizing {split}", total=None)
                documents = text_bytes = 0
                batch: list[str] = []

                def flush(batch: list[str], writer: TokenWriter = writer) -> None:
                    for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
                        writer.write([*encoding.ids, end_of_text])

                for document in _split(train, val, held_out, split):
                    batch.append(document)
                    documents += 1
                    text_bytes += len(document.encode("utf-8"))
                    if len(batch) >= ENCODE_BATCH:
                        flush(batch)
                        batch = []
                        progress.update(task, completed=documents)
                if batch:
                    flush(batch)
                writer.close()
                progress.update(task, total=documents, completed=documents)
                counts.update({f"{split}_tokens": writer.count, f"{split}_bytes": text_bytes,
                               f"{split}_documents": documents})
        if counts["train_tokens"] == 0:
            raise CogniError(f"{options.source}: no text found (every document was empty)")
        meta = {
            "format": "text", "key": key, "text_data_version": TEXT_DATA_VERSION, "source": options.source,
            "val_source": options.val, "val_fraction": fraction, "seed": options.seed, "vocab_size": vocab_size,
            "dtype": dtype.name, "tokenizer_hash": tokenizer_hash(tokenizer), "skipped_records": skipped,
            "document_split": document_split(train), "val_document_split": document_split(val or train), **counts,
        }
        commit_staging(out, staging, meta)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return PrepareResult(DataDir.open(out), reused=False)
