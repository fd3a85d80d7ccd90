"""Reply sources: a local model gets the chat as ChatML, every source meets the whole contract, and `open_source`
opens what the options name."""

from __future__ import annotations

from pathlib import Path

from cognimamba.chat.format import render_conversation
from cognimamba.chat.options import SourceOptions
from cognimamba.chat.remote import RemoteSource
from cognimamba.chat.session import ChatSession, ReplySource
from cognimamba.chat.sources import LocalSource, open_source
from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.decoding import ChatModel
from cognimamba.model.tokenizer import IM_START
from tests.chat.scripts import ScriptedModel
from tests.serve.scripted import scripted_model
from tests.serve.server_thread import running_server

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say <|im_end|> please"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def test_a_local_source_renders_the_chat_as_chatml_for_its_model():
    model = ScriptedModel(["Done."])
    source = LocalSource(model)
    text = "".join(source.stream(MESSAGES, TOOLS, GenerationConfig(), stop=["END"]))
    rendered = render_conversation(MESSAGES, TOOLS, add_generation_prompt=True)
    assert text == "Done." and model.prompts == [rendered] == [source.render(MESSAGES, TOOLS)]
    assert model.stops == [[IM_START, "END"]]  # a new turn's start ends a local model's reply
    assert source.count_tokens(MESSAGES, TOOLS, add_generation_prompt=True) == len(rendered)  # the model's count
    assert source.count_tokens(MESSAGES[1:]) == len(render_conversation(MESSAGES[1:]))


def test_a_run_is_opened_in_this_process_as_a_local_source(tiny_run: Path):
    source = open_source(SourceOptions(tiny_run, device="cpu"))
    assert isinstance(source, LocalSource) and isinstance(source.model, ChatModel)
    assert source.name == tiny_run.name and source.context_length == 64 and source.notice is None


def test_the_inspector_asks_any_source_for_token_alternatives_without_checking_it_can(tiny_run: Path):
    source = open_source(SourceOptions(tiny_run, device="cpu"))
    source.top_alternatives = 3  # reaches the model that decodes
    session = ChatSession(settings=GenerationConfig(temperature=0.0, max_new_tokens=4))
    session.add_user("Once upon a time")
    finished = list(session.reply(source))[-1]
    assert finished.stats.token_choices and all(len(c.alternatives) == 3 for c in finished.stats.token_choices)
    source.close()
    source.close()  # twice is safe


def test_a_server_is_opened_as_a_remote_source_with_the_same_contract():
    with running_server(scripted_model(["hi"])) as url:
        source: ReplySource = open_source(SourceOptions(url=f"{url}/v1"))
        assert isinstance(source, RemoteSource) and source.name == "scripted"
        source.top_alternatives = 5  # a server cannot say how likely a token was: asked anyway, nothing breaks
        source.warm_up()
        session = ChatSession()
        session.add_user("hello")
        finished = list(session.reply(source))[-1]
        assert finished.message.content == "hi" and finished.stats.token_choices == []
        source.close()
