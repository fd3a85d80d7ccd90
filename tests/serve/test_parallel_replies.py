"""Continuous batching behind the server: eight clients at once get what each would get alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.batching import generate_all
from cognimamba.model.tokenizer import encode
from cognimamba.serve.engine import load_served_model
from tests.serve.server_thread import running_server

PROMPTS = ["Once upon a time", "The cat", "Lily and Tom went", "One day, a little", "The sun was", "Mom said",
           "A big dog", "They played"]


def test_eight_clients_at_once_get_the_replies_each_gets_alone(tiny_run: Path):
    model = load_served_model(tiny_run, "cpu", name="tiny", parallel=8)
    assert model.parallel == 8
    with running_server(model) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

        def complete(prompt: str, stream: bool = False) -> tuple[str, int]:
            if stream:
                chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0,
                                                        stream=True, stream_options={"include_usage": True}))
                usage = chunks[-1].usage
                return "".join(chunk.choices[0].text for chunk in chunks if chunk.choices), usage.completion_tokens
            reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0)
            return reply.choices[0].text, reply.usage.completion_tokens

        alone = [complete(prompt) for prompt in PROMPTS]
        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            together = list(pool.map(complete, PROMPTS, [index % 2 == 0 for index in range(len(PROMPTS))]))
    assert together == alone
    assert all(tokens > 0 for _, tokens in alone)


def test_a_server_compiles_its_steps_where_it_pays_and_replies_as_it_would_eagerly(tiny_run: Path, monkeypatch):
    monkeypatch.setattr("cognimamba.inference.decode_step.AUTO_COMPILE_MIN_PARAMETERS", 0)  # the tiny model pays
    compiled = load_served_model(tiny_run, "cpu", name="tiny", compile=None, parallel=4)
    assert compiled.compiled_in is not None and compiled.compiled_in > 0  # before the first request
    eager = load_served_model(tiny_run, "cpu", name="tiny", parallel=4)
    assert eager.compiled_in is None
    settings = GenerationConfig(temperature=0.0, max_new_tokens=16)
    prompts = [encode(eager.source.tokenizer, prompt) for prompt in PROMPTS]
    texts = [[text for text, _ in generate_all(model.engine, prompts, settings)] for model in (compiled, eager)]
    assert texts[0] == texts[1]
