"""The synthetic corpora by name, registered in one place: `cogni prepare NAME`, the recipes and the caches of
prepared data find a generator and its version here.

Each corpus is a module of this package exporting its NAME, its GENERATOR_VERSION (bumped when the output for a
(count, seed) changes, so data dirs prepared from the old output are rebuilt) and its generator. A new corpus is
such a module and one line below; `chat.py` is the example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from cognimamba.data.synthetic import chat, functions, stories, tools
from cognimamba.errors import CogniError


@dataclass(frozen=True)
class SyntheticCorpus:
    name: str
    version: int
    generate: Callable[[int, int], Iterator[Any]]  # (count, seed) -> documents (text) or Conversations (chat)
    kind: Literal["text", "chat"]


REGISTRY: dict[str, SyntheticCorpus] = {corpus.name: corpus for corpus in [
    SyntheticCorpus(stories.NAME, stories.GENERATOR_VERSION, stories.generate_stories, "text"),
    SyntheticCorpus(tools.NAME, tools.GENERATOR_VERSION, tools.generate_conversations, "chat"),
    SyntheticCorpus(chat.NAME, chat.GENERATOR_VERSION, chat.generate_conversations, "chat"),
    SyntheticCorpus(functions.NAME, functions.GENERATOR_VERSION, functions.generate_conversations, "chat"),
]}


def synthetic_corpus(name: str) -> SyntheticCorpus:
    """The registered corpus called `name`; any other name is an error that lists the registered ones."""
    if name not in REGISTRY:
        raise CogniError(f"{name}: not a synthetic corpus (registered: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def corpus_names(kind: Literal["text", "chat"]) -> tuple[str, ...]:
    """The registered corpora of one kind, in the order they are registered."""
    return tuple(name for name, corpus in REGISTRY.items() if corpus.kind == kind)
