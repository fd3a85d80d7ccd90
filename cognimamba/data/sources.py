"""Where documents come from: named Hugging Face datasets (one registry) and local files.

Hub datasets and local .json/.jsonl/.parquet files go through the same `datasets` loading path, so
the offline tests of local files exercise the code that reads the hub.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import END_OF_TEXT

LOCAL_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class NamedSource:
    """A dataset on the Hugging Face hub with what it takes to read its text."""

    name: str
    hub_id: str
    text_field: str
    train_split: str = "train"
    val_split: str | None = "validation"
    config_name: str | None = None
    format: str = "text"  # "text" for pretraining; chat formats are added by the chat data module
    description: str = ""


REGISTRY: dict[str, NamedSource] = {}


def register(source: NamedSource) -> NamedSource:
    REGISTRY[source.name] = source
    return source


register(NamedSource("tinystories", "roneneldan/TinyStories", "text",
                     description="2M short stories in simple English (Eldan & Li 2023)"))
register(NamedSource("tinyshakespeare", "karpathy/tiny_shakespeare", "text",
                     description="1 MB of Shakespeare plays, the char-rnn classic"))
register(NamedSource("code", "code_search_net", "whole_func_string", config_name="python",
                     description="Python functions from CodeSearchNet"))


@dataclass(frozen=True)
class SourceSpec:
    """What `prepare` was asked to read, resolved to a named source or a local file."""

    label: str
    named: NamedSource | None = None
    path: Path | None = None
    text_field: str | None = None
    separator: str | None = None  # where a .txt file is split: given or detected (`text_separator`); None: blank lines
    limit: int | None = None
    skip_bad: bool = False  # skip malformed JSON/JSONL records instead of stopping at the first

    def identity(self) -> dict[str, Any]:
        """What decides whether a prepared result can be reused."""
        if self.path is not None:
            stat = self.path.stat()
            return {"path": str(self.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                    "text_field": self.text_field, "separator": self.separator, "limit": self.limit,
                    "skip_bad": self.skip_bad}
        assert self.named is not None
        return {"hub_id": self.named.hub_id, "config": self.named.config_name,
                "text_field": self.text_field, "limit": self.limit}


def resolve_source(source: str, text_field: str | None = None, separator: str | None = None,
                   limit: int | None = None, skip_bad: bool = False, separator_if_present: bool = False) -> SourceSpec:
    """`source` as a named dataset or a checked local file; a .txt file's separator is settled here
    (`text_separator`), so it is part of the cache key and meta.json can name it."""
    if source in REGISTRY:
        named = REGISTRY[source]
        return SourceSpec(source, named=named, text_field=text_field or named.text_field, limit=limit)
    path = Path(source)
    if not path.exists():
        names = ", ".join(sorted(REGISTRY))
        raise CogniError(f"{source}: no such file, and not a named dataset (named: {names})")
    if path.is_dir():
        raise CogniError(f"{source}: is a directory; pass a .txt, .json, .jsonl or .parquet file")
    if path.suffix.lower() not in LOCAL_SUFFIXES:
        raise CogniError(f"{source}: unsupported file type {path.suffix or '(none)'!r}; "
                         f"use one of {', '.join(LOCAL_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise CogniError(f"{source}: file is empty")
    if path.suffix.lower() != ".txt" and not text_field:
        text_field = "text"
    if path.suffix.lower() == ".txt":
        separator = text_separator(path, separator, separator_if_present)
    return SourceSpec(path.name, path=path, text_field=text_field, separator=separator, limit=limit,
                      skip_bad=skip_bad)


def read_text_file(path: Path) -> str:
    """The whole file as UTF-8, refusing binary data with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise CogniError(f"{path}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise CogniError(f"{path}: looks like a binary file (NUL bytes); pass a UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise CogniError(f"{path}: not valid UTF-8 at byte {error.start} (line {line}); "
                         "re-save the file as UTF-8") from error


def detect_separator(path: Path) -> str | None:
    """`<|endoftext|>` where a .txt file ends its documents with it, as the official TinyStories files do (on its
    own line or ending one); else None, for blank lines. One found mid-line is text about the token, not a
    separator, so the file keeps the blank-line rule."""
    marker = END_OF_TEXT.encode()
    found = False
    with open(path, "rb") as lines:
        for line in lines:
            count = line.count(marker)
            if count > 1 or (count == 1 and not line.rstrip().endswith(marker)):
                return None
            found = found or count == 1
    return END_OF_TEXT if found else None


def text_separator(path: Path, given: str | None, only_if_present: bool = False) -> str | None:
    """The separator a .txt file is split at: `given`, else the detected one, else None (blank lines).

    With `only_if_present` (a validation file), a `given` separator the file never contains is set aside for
    the file's own layout: one --separator for both files must not make a differently laid out file one document.
    """
    if given and not (only_if_present and _unescaped(given).encode() not in path.read_bytes()):
        return given
    return detect_separator(path)


def _unescaped(separator: str) -> str:
    """--separator as typed on a command line: `\\n` means a newline."""
    return separator.encode().decode("unicode_escape")


def split_documents(text: str, separator: str | None) -> Iterator[str]:
    """Documents of a .txt file: separated by `separator`, or by blank lines."""
    if separator:
        parts = text.split(_unescaped(separator))
    else:
        parts = []
        current: list[str] = []
        for line in text.splitlines():
            if line.strip():
                current.append(line)
            elif current:
                parts.append("\n".join(current))
                current = []
        if current:
            parts.append("\n".join(current))
    for part in parts:
        part = part.strip()
        if part:
            yield part


def read_json_records(path: Path, text_field: str | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(good records, one problem per bad record naming its line) of a local JSON array or JSONL file.

    A record is bad when it is not valid JSON, not an object, or (with `text_field`) lacks that text field.
    """
    text = read_text_file(path)
    if path.suffix.lower() == ".jsonl" or not text.lstrip().startswith("["):
        numbered = []
        problems = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((f"line {number}", json.loads(line)))
            except (json.JSONDecodeError, RecursionError) as error:
                problems.append(f"line {number} is not valid JSON ({getattr(error, 'msg', 'nested too deeply')})")
        if problems and text.lstrip().startswith("{"):
            _refuse_single_object(path, text)
    else:
        try:
            items = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            where = f"at line {error.lineno} " if isinstance(error, json.JSONDecodeError) else ""
            raise CogniError(f"{path}: not valid JSON {where}({getattr(error, 'msg', 'nested too deeply')}); "
                             "fix the file (a JSON array cannot be read around a syntax error)") from error
        numbered = [(f"record {index}", item) for index, item in enumerate(items, start=1)]
        problems = []
    records = []
    for where, record in numbered:
        if not isinstance(record, dict):
            problems.append(f"{where} is not a JSON object ({type(record).__name__})")
        elif text_field is not None and text_field not in record:
            fields = ", ".join(sorted(record)) or "(none)"
            problems.append(f"{where} has no field {text_field!r}; use --text-field with one of: {fields}")
        elif text_field is not None and not isinstance(record[text_field], str):
            problems.append(f"{where} field {text_field!r} is not text ({type(record[text_field]).__name__})")
        else:
            records.append(record)
    return records, problems


def _refuse_single_object(path: Path, text: str) -> None:
    """A pretty-printed {"data": [...]} file is one object, not records: say so instead of 'line 1 is not JSON'."""
    try:
        whole = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return
    if isinstance(whole, dict):
        lists = [key for key, value in whole.items() if isinstance(value, list)]
        where = f" (the records look like they are under {lists[0]!r})" if lists else ""
        raise CogniError(f"{path}: holds one JSON object, not a list of records{where}; write a JSON array of "
                         "objects or JSONL, one object per line")


def _check_json_records(path: Path, text_field: str | None = None) -> None:
    """Validate JSON/JSONL up front so a bad record is reported with its line number."""
    records, problems = read_json_records(path, text_field)
    if problems:
        more = f" ({len(problems)} bad records in all)" if len(problems) > 1 else ""
        hint = "; fix it or pass --skip-bad to skip bad records" if records else ""
        raise CogniError(f"{path}: {problems[0]}{more}{hint}")


def load_records(spec: SourceSpec, split: str | None = None) -> Any:
    """An iterable of dict records through `datasets` (hub or local json/jsonl/parquet)."""
    if spec.path is not None and spec.path.suffix.lower() in (".json", ".jsonl"):
        if spec.skip_bad:
            return read_json_records(spec.path, spec.text_field or "text")[0]
        _check_json_records(spec.path, spec.text_field or "text")  # before the slow import: bad files fail fast
    import datasets  # noqa: PLC0415 (takes seconds; only hub sources need it)

    datasets.disable_progress_bars()
    if spec.path is not None:
        suffix = spec.path.suffix.lower()
        builder = "parquet" if suffix == ".parquet" else "json"
        try:
            return datasets.load_dataset(builder, data_files=str(spec.path), split="train", streaming=True)
        except Exception as error:
            raise CogniError(f"{spec.path}: could not be read as {builder} ({str(error).splitlines()[0]})") from error
    assert spec.named is not None
    return stream_hub_dataset(spec.named, split, "pass a local file instead, e.g. `cogni prepare my_corpus.txt`")


def stream_hub_dataset(named: NamedSource, split: str | None, instead: str) -> Any:
    """A named dataset streamed from the Hugging Face hub; when the hub cannot be reached, one line saying
    what to do `instead`."""
    import datasets  # noqa: PLC0415 (takes seconds; only hub sources need it)

    try:
        return datasets.load_dataset(named.hub_id, named.config_name, split=split or named.train_split,
                                     streaming=True)
    except Exception as error:
        raise CogniError(f"could not reach the Hugging Face hub for {named.hub_id} ({type(error).__name__}); "
                         f"{instead}") from error


def iter_record_texts(records: Any, text_field: str, where: str, limit: int | None) -> Iterator[str]:
    """Texts from dict records; a missing field is an error naming the fields that exist."""
    count = 0
    try:
        for number, record in enumerate(records, start=1):
            if limit is not None and count >= limit:
                return
            if text_field not in record:
                fields = ", ".join(sorted(record)) or "(none)"
                raise CogniError(f"{where}: record {number} has no field {text_field!r}; "
                                 f"use --text-field with one of: {fields}")
            value = record[text_field]
            if not isinstance(value, str):
                raise CogniError(f"{where}: record {number} field {text_field!r} is not text ({type(value).__name__})")
            if value.strip():
                count += 1
                yield value
    except CogniError:
        raise
    except Exception as error:
        raise CogniError(f"{where}: reading failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                         "check the network or pass a local file") from error


def iter_documents(spec: SourceSpec, split: str | None = None) -> Iterator[str]:
    """Every document of the source, in order; `split` picks a hub split."""
    if spec.path is not None and spec.path.suffix.lower() == ".txt":
        documents = split_documents(read_text_file(spec.path), spec.separator)
        for count, document in enumerate(documents):
            if spec.limit is not None and count >= spec.limit:
                return
            yield document
        return
    records = load_records(spec, split)
    where = str(spec.path) if spec.path is not None else spec.named.hub_id  # type: ignore[union-attr]
    yield from iter_record_texts(records, spec.text_field or "text", where, spec.limit)
