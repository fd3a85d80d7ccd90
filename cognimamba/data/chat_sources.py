"""Where conversations come from: named chat datasets on the hub, local chat files and the synthetic corpora.

Each source yields `Conversation`s: hub and local records through the converter of their format
(data/converters.py), a synthetic corpus straight from its generator (data/synthetic/registry.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cognimamba.data.conversation import BadRecord, Conversation
from cognimamba.data.converters import CHAT_FORMATS, detect_format, to_conversation
from cognimamba.data.sources import REGISTRY, NamedSource, read_json_records, register, stream_hub_dataset
from cognimamba.data.synthetic import chat as synthetic_chat
from cognimamba.data.synthetic import tools as synthetic_tools
from cognimamba.data.synthetic.registry import corpus_names, synthetic_corpus
from cognimamba.errors import CogniError
from cognimamba.system.paths import cache_dir

SYNTHETIC_TOOLS = synthetic_tools.NAME
SYNTHETIC_CHAT = synthetic_chat.NAME  # the built-in tools of `cogni chat --enable-tools` (quickstart --chat)
SYNTHETIC_SOURCES = corpus_names("chat")  # every registered synthetic corpus of conversations
CHAT_SUFFIXES = (".json", ".jsonl", ".parquet")

register(NamedSource("alpaca", "tatsu-lab/alpaca", "", val_split=None, format="alpaca",
                     description="52k instruction-following demonstrations (Stanford Alpaca)"))
register(NamedSource("dolly", "databricks/databricks-dolly-15k", "", val_split=None, format="alpaca",
                     description="15k human-written instruction/response pairs (Databricks)"))
register(NamedSource("ultrachat", "HuggingFaceH4/ultrachat_200k", "", train_split="train_sft",
                     val_split="test_sft", format="messages",
                     description="200k multi-turn dialogues, filtered UltraChat"))
register(NamedSource("codealpaca", "sahil2801/CodeAlpaca-20k", "", val_split=None, format="alpaca",
                     description="20k code instructions in Alpaca format"))
register(NamedSource("glaive", "glaiveai/glaive-function-calling-v2", "", val_split=None, format="glaive",
                     description="113k function-calling conversations (Glaive v2)"))


def chat_source_names() -> list[str]:
    return sorted(name for name, source in REGISTRY.items() if source.format in CHAT_FORMATS)


# ---------------------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class ChatSource:
    """One chat source to read: a named hub dataset, a local file, or a synthetic corpus."""

    label: str
    format: str
    named: NamedSource | None = None
    path: Path | None = None
    system: str | None = None
    limit: int | None = None
    count: int | None = None  # synthetic sources only
    seed: int = 0

    def identity(self) -> dict[str, Any]:
        """What decides whether a prepared result can be reused."""
        common = {"format": self.format, "system": self.system, "limit": self.limit}
        if self.path is not None:
            stat = self.path.stat()
            return {"path": str(self.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **common}
        if self.named is not None:
            return {"hub_id": self.named.hub_id, "config": self.named.config_name, **common}
        return {"synthetic": synthetic_corpus(self.label).version, "generator": self.label, "count": self.count,
                "seed": self.seed, **common}


def _check_json_file(path: Path) -> dict[str, Any]:
    """Refuse invalid JSON/JSONL up front, naming the line; the first record tells the format."""
    records, problems = read_json_records(path)
    if problems:
        more = f" ({len(problems)} bad records in all)" if len(problems) > 1 else ""
        raise CogniError(f"{path}: {problems[0]}{more}; fix the file")
    if not records:
        raise CogniError(f"{path}: holds no records")
    return records[0]


def resolve_chat_source(source: str, format: str | None = None, system: str | None = None,
                        limit: int | None = None, count: int | None = None, seed: int = 0) -> ChatSource:
    """A named chat dataset, a synthetic corpus, or a local file (format from --format or from its first record)."""
    if format is not None and format not in CHAT_FORMATS:
        raise CogniError(f"--format {format!r} is not a chat format; choose one of {', '.join(CHAT_FORMATS)}")
    if source in SYNTHETIC_SOURCES:
        return ChatSource(source, "messages", system=system, limit=limit, count=count or 1000, seed=seed)
    if source in REGISTRY and REGISTRY[source].format in CHAT_FORMATS:
        named = REGISTRY[source]
        return ChatSource(source, format or named.format, named=named, system=system, limit=limit)
    path = Path(source)
    if not path.is_file():
        if source in REGISTRY:
            raise CogniError(f"{source}: is a plain-text dataset, not chat data; chat datasets: "
                             f"{', '.join(chat_source_names())}")
        raise CogniError(f"{source}: no such file, and not a named chat dataset "
                         f"(named: {', '.join(chat_source_names())}, {', '.join(SYNTHETIC_SOURCES)})")
    if path.suffix.lower() not in CHAT_SUFFIXES:
        raise CogniError(f"{source}: chat data must be .json, .jsonl or .parquet, not {path.suffix or '(none)'!r}")
    if path.stat().st_size == 0:
        raise CogniError(f"{source}: file is empty")
    if format is None:
        if path.suffix.lower() == ".parquet":
            raise CogniError(f"{source}: pass --format ({', '.join(CHAT_FORMATS)}) for parquet chat files")
        first = _check_json_file(path)
        format = detect_format(first)
        if format is None:
            fields = ", ".join(sorted(first)) or "no fields"
            raise CogniError(f"{source}: cannot tell the chat format from the first record ({fields}); "
                             f"pass --format {'|'.join(CHAT_FORMATS)}")
    return ChatSource(path.name, format, path=path, system=system, limit=limit)


def _load_records(source: ChatSource, split: str | None) -> Any:
    """Records through `datasets`: local files read whole (exact nested JSON), hub datasets streamed."""
    import datasets  # noqa: PLC0415 (takes seconds; only hub sources need it)


    datasets.disable_progress_bars()
    if source.path is not None:
        suffix = source.path.suffix.lower()
        if suffix in (".json", ".jsonl"):
            _check_json_file(source.path)
        builder = "parquet" if suffix == ".parquet" else "json"
        try:
            # Not streamed: Arrow's streaming JSON reader turns nested objects of differing shapes into strings.
            return datasets.load_dataset(builder, data_files=str(source.path), split="train",
                                         cache_dir=str(cache_dir() / "hf-datasets"))
        except Exception as error:
            raise CogniError(f"{source.path}: could not be read as {builder} ({str(error).splitlines()[0]})") from error
    assert source.named is not None
    return stream_hub_dataset(source.named, split, "download it and pass the file instead: cogni prepare FILE "
                              f"--format {source.named.format}")


def check_reachable(source: ChatSource) -> None:
    """Open a hub dataset once up front, so an unreachable hub fails before any work starts."""
    if source.named is not None:
        _load_records(source, None)


@dataclass
class ReadStats:
    """How many records became conversations, and why the others did not."""

    read: int = 0
    skipped: int = 0
    first_problem: str | None = None
    problems: dict[str, int] = field(default_factory=dict)

    def skip(self, number: int, problem: str) -> None:
        self.skipped += 1
        self.problems[problem] = self.problems.get(problem, 0) + 1
        if self.first_problem is None:
            self.first_problem = f"record {number}: {problem}"


def iter_conversations(source: ChatSource, split: str | None = None,
                       stats: ReadStats | None = None) -> Iterator[Conversation]:
    """Every usable conversation of the source, in order; bad records are skipped and counted in `stats`."""
    stats = stats if stats is not None else ReadStats()
    if source.named is None and source.path is None:
        records: Any = synthetic_corpus(source.label).generate(source.count or 0, source.seed)
    else:
        records = _load_records(source, split)
    where = str(source.path) if source.path is not None else source.label
    produced = 0
    try:
        for number, record in enumerate(records, start=1):
            if source.limit is not None and produced >= source.limit:
                break
            stats.read += 1
            if isinstance(record, Conversation):
                conversation = record
            else:
                try:
                    conversation = to_conversation(record, source.format)
                except BadRecord as problem:
                    stats.skip(number, str(problem))
                    continue
            if source.system and conversation.messages[0]["role"] != "system":
                conversation = Conversation([{"role": "system", "content": source.system}, *conversation.messages],
                                            conversation.tools)
            produced += 1
            yield conversation
    except CogniError:
        raise
    except Exception as error:
        raise CogniError(f"{where}: reading failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                         "check the network or pass a local file") from error
    if produced == 0:
        reason = f" ({stats.first_problem})" if stats.first_problem else ""
        raise CogniError(f"{where}: no usable {source.format} conversations{reason}; is --format right?")
