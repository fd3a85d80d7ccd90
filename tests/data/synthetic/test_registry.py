"""The synthetic corpora's one registry: every corpus names its version, and an unknown name is an error."""

from __future__ import annotations

from itertools import islice

import pytest

from cognimamba.data.chat_sources import SYNTHETIC_SOURCES, ChatSource, iter_conversations, resolve_chat_source
from cognimamba.data.conversation import Conversation
from cognimamba.data.synthetic import chat, functions, stories, tools
from cognimamba.data.synthetic.registry import REGISTRY, corpus_names, synthetic_corpus
from cognimamba.errors import CogniError

MODULES = [stories, tools, chat, functions]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.NAME)
def test_each_corpus_is_registered_under_its_name_with_its_version(module: object) -> None:
    corpus = synthetic_corpus(module.NAME)
    assert corpus.name == module.NAME
    assert isinstance(corpus.version, int) and corpus.version >= 1
    assert corpus.version == module.GENERATOR_VERSION


def test_the_registry_holds_every_corpus_and_only_those() -> None:
    assert sorted(REGISTRY) == sorted(module.NAME for module in MODULES)
    assert corpus_names("text") == ("synthetic-stories",)
    assert SYNTHETIC_SOURCES == corpus_names("chat") == ("synthetic-tools", "synthetic-chat", "synthetic-functions")


@pytest.mark.parametrize("name", corpus_names("chat"))
def test_a_prepared_chat_corpus_is_keyed_by_its_version(name: str) -> None:
    """A data dir is reused only while its generator's version is unchanged."""
    source = resolve_chat_source(name, count=5, seed=3)
    assert source.identity()["synthetic"] == synthetic_corpus(name).version
    assert source.identity()["generator"] == name


def test_the_registered_generators_are_the_seeded_ones() -> None:
    stories_corpus, tools_corpus = synthetic_corpus("synthetic-stories"), synthetic_corpus("synthetic-tools")
    assert list(stories_corpus.generate(3, 5)) == list(stories.generate_stories(3, seed=5))
    generated = list(islice(tools_corpus.generate(4, 2), 4))
    assert all(isinstance(conversation, Conversation) for conversation in generated)
    assert generated == list(tools.generate_conversations(4, seed=2))


def test_an_unknown_name_is_an_error_naming_the_registered_ones() -> None:
    with pytest.raises(CogniError, match=r"synthetic-tool: not a synthetic corpus \(registered: .*synthetic-tools"):
        synthetic_corpus("synthetic-tool")


def test_a_chat_source_of_no_registered_corpus_refuses_to_generate() -> None:
    """The old lookup fell back to synthetic-tools for any name; now the name must be registered."""
    misnamed = ChatSource("synthetic-tool", "messages", count=2)
    with pytest.raises(CogniError, match="not a synthetic corpus"):
        misnamed.identity()
    with pytest.raises(CogniError, match="not a synthetic corpus"):
        next(iter_conversations(misnamed))
