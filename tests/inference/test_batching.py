"""Continuous batching: a request gives the same tokens alone or beside others, whenever it joins."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from cognimamba.config.profiles import get_profile
from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.batching import BatchEngine, SlotRequest, generate_all
from cognimamba.inference.decode_step import DecodeStep, compile_pays
from cognimamba.inference.decoding import Decoder, greedy_ids
from cognimamba.model.build import build_model
from cognimamba.model.transformer import DecodeCache, SlotStep
from cognimamba.runs.loading import load_run
from tests.conftest import tiny_config

GREEDY = GenerationConfig(temperature=0.0, max_new_tokens=12)
SHAPES = {"attention": [], "hybrid": ["model.layer_pattern=AM"], "sliding": ["model.sliding_window=8"]}


def eight_prompts(vocab: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (length,), generator=generator).tolist() for length in (3, 9, 17, 30, 5, 12, 24, 1)]


def engine_ids(engine: BatchEngine, prompts: list[list[int]], settings: GenerationConfig = GREEDY) -> list[list[int]]:
    """Without a tokenizer the engine's text is each token id, which is what these tests compare."""
    collected: list[list[int]] = [[] for _ in prompts]
    done = [threading.Event() for _ in prompts]
    for index, prompt in enumerate(prompts):
        engine.submit(SlotRequest(prompt, settings, on_text=lambda text, i=index: collected[i].append(int(text)),
                                  on_done=lambda stats, error, i=index: done[i].set()))
    for event in done:
        assert event.wait(60)
    return collected


@pytest.mark.parametrize("shape", SHAPES)
def test_one_step_of_rows_at_different_positions_equals_each_rows_full_forward(shape: str):
    torch.manual_seed(0)
    config = tiny_config(*SHAPES[shape], "model.vocab_size=300").model
    model = build_model(config).eval()
    prompts = eight_prompts(300)[:4]
    cache = DecodeCache(config, 4, 40)
    with torch.inference_mode():
        for row, prompt in enumerate(prompts):
            model(torch.tensor([prompt]), cache=cache.rows(row, row + 1), start=0)
        rows = torch.tensor([2, 0, 3])  # some rows, out of order; row 1 sits this step out
        positions = torch.tensor([len(prompts[row]) for row in rows.tolist()])
        logits = model.decode_slots(torch.tensor([[7], [8], [9]]), SlotStep(cache, rows, positions))
        for index, row in enumerate(rows.tolist()):
            full = model(torch.tensor([[*prompts[row], 7 + index]]))[0, -1]
            torch.testing.assert_close(logits[index], full, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_eight_prompts_decode_the_same_ids_alone_and_together(shape: str):
    torch.manual_seed(1)
    config = tiny_config(*SHAPES[shape], "model.vocab_size=300").model
    model = build_model(config).eval()
    prompts = eight_prompts(300, seed=2)
    alone = [greedy_ids(model, prompt, GREEDY.max_new_tokens) for prompt in prompts]
    assert engine_ids(BatchEngine(model, None, slots=8), prompts) == alone
    # Fewer slots than requests: the rest wait, then join as slots free up; long prompts are read in chunks.
    assert engine_ids(BatchEngine(model, None, slots=3, prefill_chunk=7), prompts) == alone


@pytest.mark.parametrize("shape", ["attention", "hybrid"])
def test_an_inline_engine_is_stepped_by_its_reader_on_the_readers_thread(shape: str):
    torch.manual_seed(1)
    model = build_model(tiny_config(*SHAPES[shape], "model.vocab_size=300").model).eval()
    prompts = eight_prompts(300, seed=3)
    alone = [greedy_ids(model, prompt, GREEDY.max_new_tokens) for prompt in prompts]
    engine = BatchEngine(model, None, slots=3, prefill_chunk=7, inline=True)
    threads_before = threading.active_count()
    replies = [engine.stream(prompt, GREEDY) for prompt in prompts]
    assert [[int(token) for token in reply] for reply in replies] == alone
    assert engine._thread is None and threading.active_count() == threads_before
    assert not engine.pump()  # nothing left to step


def stepped_ids(engine: BatchEngine, prompts: list[list[int]]) -> list[list[int]]:
    """Every prompt queued before the first step, then the engine stepped on this thread until all are done."""
    collected: list[list[int]] = [[] for _ in prompts]
    for index, prompt in enumerate(prompts):
        record = lambda text, i=index: collected[i].append(int(text))  # noqa: E731
        engine._waiting.append(SlotRequest(prompt, GREEDY, on_text=record))
    with torch.no_grad():
        while engine._waiting or engine._active:
            engine.step()
    return collected


@pytest.mark.parametrize(("shape", "chunk", "passes"), [("attention", 256, 1), ("sliding", 256, 1),
                                                        ("attention", 16, 3), ("hybrid", 256, 4)])
def test_prompts_waiting_together_are_read_in_one_forward_pass(shape: str, chunk: int, passes: int):
    torch.manual_seed(7)
    config = tiny_config(*SHAPES[shape], "model.vocab_size=300").model
    model = build_model(config).eval()
    prompts = [prompt for prompt in eight_prompts(300, seed=8) if len(prompt) in (3, 9, 17, 5)]
    alone = [greedy_ids(model, prompt, GREEDY.max_new_tokens) for prompt in prompts]
    engine = BatchEngine(model, None, slots=4, prefill_chunk=chunk)
    prompt_passes: list[int] = []  # slots read by each forward pass over prompts
    one, rows = engine._forward, engine._forward_rows
    engine._forward = lambda ids, slot, start: prompt_passes.append(1) or one(ids, slot, start)  # type: ignore[method-assign]
    engine._forward_rows = lambda chunks, group: prompt_passes.append(len(group)) or rows(chunks, group)  # type: ignore[method-assign]
    assert stepped_ids(engine, prompts) == alone
    # All four padded to the longest (17); with 16 ids a step, 4 ids a row, then 5 for the three left, then the
    # last 8 of the longest. A Mamba-2 state would read the padding, so there each pass reads as many ids as the
    # shortest prompt has left: 3 ids of all four, 2 of the three left (9, 17, 5), 4 of two, the last 8 of one.
    assert len(prompt_passes) == passes and sum(prompt_passes) >= len(prompts), prompt_passes
    if shape == "hybrid":
        assert prompt_passes == [4, 3, 2, 1]


def test_a_compiled_engine_decodes_the_eager_ids_without_compiling_again(tiny_run):
    loaded = load_run(tiny_run)
    prompts = eight_prompts(loaded.config.model.vocab_size, seed=3)
    alone = [greedy_ids(loaded.model, prompt, GREEDY.max_new_tokens) for prompt in prompts]
    step = DecodeStep(loaded.model, torch.device("cpu"), compile=True)
    engine = BatchEngine(loaded.model, None, slots=4, prefill_chunk=7, one_slot_step=step)
    engine.warm_up()  # one stream alone, and several: every case the requests below meet
    assert step.compile_error is None and step.single.seconds and step.batched.seconds
    counted = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert engine_ids(engine, prompts) == alone  # 8 requests through 4 slots: rows come and go, out of order
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == counted


def test_compile_pays_for_a_server_on_cpu_from_two_million_parameters():
    small, large = tiny_config().model, get_profile("cpu").model
    cpu = torch.device("cpu")
    assert not compile_pays(build_model(small), cpu)
    assert compile_pays(build_model(large), cpu)
    assert not compile_pays(build_model(replace(large, layer_pattern="AM" * 3)), cpu)  # Mamba-2: not measured
    assert not compile_pays(build_model(large), torch.device("meta"))


def test_a_trained_model_replies_the_same_text_alone_and_in_a_batch(tiny_run):
    loaded = load_run(tiny_run)
    tokenizer = loaded.tokenizer
    texts = ["Once upon a time", "The cat", "Lily and Tom went", "One day, a little", "The sun was", "Mom said",
             "A big dog", "They played"]
    prompts = [tokenizer.encode(text).ids for text in texts]
    settings = GenerationConfig(temperature=0.0, max_new_tokens=20)
    decoder = Decoder(loaded.model, tokenizer)
    alone = [decoder.generate(prompt, settings) for prompt in prompts]
    together = generate_all(BatchEngine(loaded.model, tokenizer, slots=8), prompts, settings)
    assert [text for text, _ in together] == alone
    assert all(stats.generated_tokens > 0 and stats.stop_reason for _, stats in together)


def test_sampling_settings_and_seeds_are_each_requests_own():
    torch.manual_seed(3)
    model = build_model(tiny_config("model.vocab_size=300").model).eval()
    prompts = eight_prompts(300, seed=4)[:4]
    sampled = GenerationConfig(temperature=1.0, top_k=50, max_new_tokens=8, seed=11)
    engine = BatchEngine(model, None, slots=4)
    alone = [engine_ids(engine, [prompt], sampled)[0] for prompt in prompts]
    assert engine_ids(engine, prompts, sampled) == alone


def test_a_seeded_reply_is_the_same_in_a_batch_as_from_the_one_stream_decoder():
    """`cogni serve` (the engine's batched sampling) and `cogni chat` (the Decoder's) draw the same tokens."""
    torch.manual_seed(4)
    model = build_model(tiny_config("model.vocab_size=300").model).eval()
    prompts = eight_prompts(300, seed=5)
    settings = [GenerationConfig(temperature=0.9, top_k=40, top_p=0.8, max_new_tokens=10, seed=index)
                for index in range(len(prompts))]
    decoder = Decoder(model, None)
    alone = [list(decoder.stream_ids(prompt, setting)) for prompt, setting in zip(prompts, settings, strict=True)]
    engine = BatchEngine(model, None, slots=8)
    replies = [engine.stream(prompt, setting) for prompt, setting in zip(prompts, settings, strict=True)]
    assert [[int(token) for token in reply] for reply in replies] == alone


def test_a_cancelled_request_frees_its_slot_for_the_next():
    model = build_model(tiny_config("model.vocab_size=300").model).eval()
    engine = BatchEngine(model, None, slots=1)
    cancel = threading.Event()
    endless = GenerationConfig(temperature=0.0, max_new_tokens=10_000)
    first_token = threading.Event()
    ended: list[str] = []
    engine.submit(SlotRequest([1, 2, 3], endless, cancel=cancel, on_text=lambda text: first_token.set(),
                              on_done=lambda stats, error: ended.append(stats.stop_reason)))
    assert first_token.wait(30)
    cancel.set()
    assert engine_ids(engine, [[4, 5]]) == [greedy_ids(model, [4, 5], GREEDY.max_new_tokens)]
    assert ended == ["cancelled"]


def test_the_cache_grows_for_a_long_prompt_while_another_slot_is_mid_reply():
    torch.manual_seed(5)
    model = build_model(tiny_config("model.vocab_size=300", "model.max_seq_len=1024",
                                    "model.layer_pattern=AM").model).eval()
    short, long = eight_prompts(300, seed=6)[2], torch.randint(0, 300, (400,)).tolist()
    engine = BatchEngine(model, None, slots=2, prefill_chunk=64)
    assert engine.cache.max_len == 256  # what a short chat needs, not the whole context
    settings = GenerationConfig(temperature=0.0, max_new_tokens=40)
    short_ids: list[int] = []
    started, short_done = threading.Event(), threading.Event()

    def on_short_token(text: str) -> None:
        short_ids.append(int(text))
        started.set()

    long_reply = GenerationConfig(temperature=0.0, max_new_tokens=200)  # still going when the long prompt comes
    engine.submit(SlotRequest(short, long_reply, on_text=on_short_token, on_done=lambda *_: short_done.set()))
    assert started.wait(30)
    assert engine_ids(engine, [long], settings) == [greedy_ids(model, long, 40)]
    assert short_done.wait(30) and short_ids == greedy_ids(model, short, 200)
    assert engine.cache.max_len == 512
