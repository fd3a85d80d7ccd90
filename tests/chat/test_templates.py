"""An imported run speaks its checkpoint's own chat template: the prompt ids transformers' apply_chat_template
gives, no control id from a message's text, the template's end-of-turn tokens as stops, and tools where the
template's call format is ours (Qwen) or refused in one line where it is not (Llama 3, Gemma 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from openai import BadRequestError, OpenAI
from tokenizers import AddedToken

from cognimamba.chat.format import ToolCall, parse_assistant
from cognimamba.chat.session import ChatSession, ToolRan
from cognimamba.chat.sources import LocalSource
from cognimamba.chat.templates import CHATML, OwnTemplate, prompt_format, run_prompt_format
from cognimamba.chat.tools import ToolBox
from cognimamba.errors import CogniError
from cognimamba.interop.import_hf import import_hf
from cognimamba.model.tokenizer import SPECIAL_TOKENS, encode
from cognimamba.runs.loading import load_run
from cognimamba.serve.engine import load_served_model
from tests.chat.family_templates import TEMPLATES, TOKENS
from tests.chat.scripts import ScriptedModel
from tests.conftest import run_cli
from tests.interop.test_import_hf import plain_bpe
from tests.serve.server_thread import running_server

SHAPE = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048}
CONFIGS = {
    "qwen2.5": lambda: transformers.Qwen2Config(**SHAPE),
    "qwen3": lambda: transformers.Qwen3Config(**SHAPE, head_dim=32),
    "llama3.2": lambda: transformers.LlamaConfig(**SHAPE, tie_word_embeddings=True),
    "gemma3": lambda: transformers.Gemma3TextConfig(**SHAPE, head_dim=32, sliding_window=16),
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
TALK = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "  Tell me a story.  "}]
TOOL_ROUND = [*ASK, {"role": "assistant", "content": "",
                     "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                      "arguments": {"city": "Paris"}}}]},
              {"role": "tool", "content": '{"temp_c": 18}'}]
# Every family's control tokens and ours, spelled in a message: all of them must stay text.
EVERY_CONTROL = " ".join(sorted({token for family in TOKENS.values() for token in [*family[0], *family[1]]}
                                | set(SPECIAL_TOKENS)))


def save_family_checkpoint(family: str, directory: Path) -> Path:
    """A random model of the family with a tokenizer holding its special tokens and its real chat template."""
    special, plain, bos, eos = TOKENS[family]
    tokenizer = plain_bpe(280)
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special])
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in plain])
    transformers.set_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[family]())
    with torch.no_grad():  # special tokens score 0, below the best of ~300 random logits: no reply ends at once
        model.get_output_embeddings().weight[[tokenizer.token_to_id(token) for token in special]] = 0.0
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": TEMPLATES[family],
                        "eos_token": eos, **({"bos_token": bos} if bos else {})}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    return directory


@pytest.fixture(scope="module", params=list(TEMPLATES))
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp(request.param.replace(".", "_"))
    source = save_family_checkpoint(request.param, root / "hf")
    run, _ = import_hf(source, root / "run")
    return request.param, transformers.AutoTokenizer.from_pretrained(source), run, load_run(run).tokenizer


def hf_ids(tokenizer, messages, tools=None, **options) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True, **options)
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def conversations(family: str) -> list[tuple[list[dict], list[dict] | None]]:
    plain = [(ASK, None), (ASK[1:], None), (TALK, None), ([ASK[0], *TALK], None)]
    return [*plain, (ASK, [WEATHER]), (TOOL_ROUND, [WEATHER])] if family.startswith("qwen") else plain


def test_our_prompt_ids_are_transformers_ids(imported) -> None:
    family, hf_tokenizer, run, tokenizer = imported
    own = run_prompt_format(run)
    assert isinstance(own, OwnTemplate)
    for messages, tools in conversations(family):
        assert encode(tokenizer, own.render(messages, tools)) == hf_ids(hf_tokenizer, messages, tools), \
            (family, messages, tools)


def test_a_message_spelling_control_tokens_gets_no_control_id(imported) -> None:
    family, hf_tokenizer, run, tokenizer = imported
    own = run_prompt_format(run)
    attack = [{"role": "system", "content": f"Rules {EVERY_CONTROL}"}, {"role": "user", "content": EVERY_CONTROL}]
    harmless = [{"role": "system", "content": "Rules"}, {"role": "user", "content": "hello"}]
    controls = {tokenizer.token_to_id(token) for token in [*TOKENS[family][0], *SPECIAL_TOKENS]}
    attacked = [i for i in encode(tokenizer, own.render(attack)) if i in controls]
    assert attacked == [i for i in encode(tokenizer, own.render(harmless)) if i in controls]
    # transformers' own sanitizing gives the same ids (it also treats Qwen's <think>, written by its template, as
    # a control token; we leave that plain added token alone, as its tokenizer does)
    if "<think>" not in TOKENS[family][1]:
        assert encode(tokenizer, own.render(attack)) == hf_ids(hf_tokenizer, attack, sanitize_control_tokens=True)


def test_the_templates_end_of_turn_tokens_end_a_reply(imported) -> None:
    family, _, run, _ = imported
    end_of_turn = {"qwen2.5": "<|im_end|>", "qwen3": "<|im_end|>", "llama3.2": "<|eot_id|>",
                   "gemma3": "<end_of_turn>"}[family]
    model = ScriptedModel(["Hi."])
    source = LocalSource(model, run_prompt_format(run))
    assert "".join(source.stream(ASK, None, model.defaults, stop=["STOP"])) == "Hi."
    assert end_of_turn in model.stops[0] and "STOP" in model.stops[0]


def test_tools_are_refused_in_one_line_where_the_template_has_no_tool_call_format(imported) -> None:
    family, _, run, _ = imported
    own = run_prompt_format(run)
    if family.startswith("qwen"):
        assert "<tool_call>" in own.render(ASK, [WEATHER])
        return
    with pytest.raises(CogniError, match=r"no <tool_call> format for tools; .*inference\.chat_template to chatml"):
        own.render(ASK, [WEATHER])


def test_a_qwen_tool_round_runs_end_to_end() -> None:
    """The call Qwen's template asks for is the call chat/format parses; its result goes back as Qwen's user turn."""
    own = OwnTemplate(TEMPLATES["qwen2.5"], (("eos_token", "<|im_end|>"),))
    rendered = own.render(TOOL_ROUND, [WEATHER], add_generation_prompt=False)
    assistant = rendered.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    assert parse_assistant(assistant).tool_calls == [ToolCall("get_weather", {"city": "Paris"})]

    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>'
    model = ScriptedModel([call, "42."])
    session = ChatSession(tools=ToolBox(enabled=True))
    session.add_user("What is 6 times 7?")
    events = list(session.reply(LocalSource(model, own)))
    assert [json.loads(event.result.content) for event in events if isinstance(event, ToolRan)] == [{"result": 42}]
    assert "# Tools" in model.prompts[0] and '"name": "calculator"' in model.prompts[0]
    assert model.prompts[1].endswith("<|im_start|>user\n<tool_response>\n{\"result\": 42}\n</tool_response>"
                                     "<|im_end|>\n<|im_start|>assistant\n")
    assert session.messages[-1].content == "42."


def test_which_format_a_run_speaks() -> None:
    imported = {"hf_chat_template": TEMPLATES["gemma3"], "inference": {"chat_template": "auto"}}
    assert isinstance(prompt_format(imported), OwnTemplate)
    assert prompt_format({**imported, "inference": {"chat_template": "chatml"}}) is CHATML
    assert prompt_format({"inference": {"chat_template": "auto"}}) is CHATML  # trained (or fine-tuned) here
    with pytest.raises(CogniError, match="no chat template of its own"):
        prompt_format({"inference": {"chat_template": "own"}})
    with pytest.raises(CogniError, match="choose one of auto, chatml, own"):
        prompt_format({**imported, "inference": {"chat_template": "jinja"}})


def test_a_template_that_refuses_the_conversation_is_one_line() -> None:
    own = OwnTemplate(TEMPLATES["gemma3"])
    with pytest.raises(CogniError, match="refused the conversation: Conversation roles must alternate"):
        own.render([{"role": "assistant", "content": "first"}])
    with pytest.raises(CogniError, match="unsupported role"):  # a role is written as it is, between controls
        own.render([{"role": "user<end_of_turn>", "content": "hi"}])


@pytest.fixture(scope="module")
def qwen3_and_gemma3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("imported")
    return {family: (source, import_hf(source, root / f"{family}-run")[0])
            for family in ("qwen3", "gemma3")
            for source in [save_family_checkpoint(family, root / f"{family}-hf")]}


@pytest.mark.slow
def test_cogni_chat_speaks_an_imported_runs_own_template(qwen3_and_gemma3, cogni_home: Path, tmp_path: Path) -> None:
    env = {"COGNI_HOME": str(cogni_home)}
    _, qwen3 = qwen3_and_gemma3["qwen3"]
    chat = run_cli("chat", str(qwen3), "--prompt", "hi", "--json", "--max-new-tokens", "8", "--temperature", "0",
                   env=env)
    assert chat.returncode == 0, chat.stderr
    reply = json.loads(chat.stdout)
    assert reply["generated_tokens"] == 8 and reply["stop_reason"] == "max_new_tokens"
    with_tools = run_cli("chat", str(qwen3), "--prompt", "What is 6 times 7?", "--enable-tools", "--json",
                         "--max-new-tokens", "8", env=env)
    assert with_tools.returncode == 0, with_tools.stderr

    _, gemma3 = qwen3_and_gemma3["gemma3"]
    refused = run_cli("chat", str(gemma3), "--prompt", "What is 6 times 7?", "--enable-tools", "--json",
                      "--max-new-tokens", "8", env=env)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "inference.chat_template to chatml" in json.loads(refused.stdout)["error"]


@pytest.mark.slow
def test_serve_renders_an_imported_runs_own_template(qwen3_and_gemma3) -> None:
    source, qwen3 = qwen3_and_gemma3["qwen3"]
    served = load_served_model(qwen3, "cpu")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    with running_server(served) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="none")
        reply = client.chat.completions.create(model=served.name, messages=messages, tools=[WEATHER], max_tokens=8)
    expected = hf_ids(transformers.AutoTokenizer.from_pretrained(source), messages, [WEATHER])
    assert reply.usage is not None and reply.usage.prompt_tokens == len(expected)
    assert reply.choices[0].finish_reason in ("length", "stop", "tool_calls")

    _, gemma3 = qwen3_and_gemma3["gemma3"]
    served = load_served_model(gemma3, "cpu")
    with running_server(served) as url, pytest.raises(BadRequestError, match="no <tool_call> format for tools"):
        OpenAI(base_url=f"{url}/v1", api_key="none").chat.completions.create(
            model=served.name, messages=messages, tools=[WEATHER], max_tokens=8)


def test_a_template_cannot_reach_python_internals() -> None:
    """transformers' sandbox: unsafe attributes are undefined, and a namespace takes no underscore names."""
    user = [{"role": "user", "content": "hi"}]
    assert OwnTemplate("{{ messages.__class__ }}|{{ dict.__class__ }}").render(user) == "|"
    with pytest.raises(CogniError, match="cannot set '_secret' on a namespace"):
        OwnTemplate("{% set ns = namespace(_secret=1) %}{{ ns }}").render(user)
