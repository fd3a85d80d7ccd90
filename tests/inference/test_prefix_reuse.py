"""Prompt caching: a request that starts where a finished one's ids still sit in a slot reads only the rest, and
decodes the same tokens as a fresh engine would."""

from __future__ import annotations

import threading

import pytest
import torch

from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.batching import BatchEngine, SlotRequest, stream_chains
from cognimamba.inference.decode_step import GenerationStats
from cognimamba.inference.decoding import Decoder, greedy_ids
from cognimamba.inference.prefix_reuse import MAX_CHECKPOINTS, RowMemory, common_prefix, prefix_chains, reusable
from cognimamba.model.build import build_model
from tests.conftest import tiny_config

GREEDY = GenerationConfig(temperature=0.0, max_new_tokens=6)
# hybrid-8: the Mamba-2 scan in chunks of 8, so prompts of a few dozen ids pass chunk ends (checkpoints).
SHAPES = {"attention": [], "hybrid": ["model.layer_pattern=AM"], "hybrid-8": ["model.layer_pattern=AM",
          "model.mamba_chunk_size=8"], "sliding": ["model.sliding_window=8"]}


def model_of(shape: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(tiny_config(*SHAPES[shape], "model.vocab_size=300").model).eval()


def replies(engine: BatchEngine, prompts: list[list[int]]) -> list[tuple[list[int], GenerationStats]]:
    """Requests submitted together, each waited for: its ids (the engine's text without a tokenizer) and stats."""
    ids: list[list[int]] = [[] for _ in prompts]
    finished: list[GenerationStats] = [GenerationStats() for _ in prompts]
    done = [threading.Event() for _ in prompts]
    for index, prompt in enumerate(prompts):
        engine.submit(SlotRequest(prompt, GREEDY, on_text=lambda text, i=index: ids[i].append(int(text)),
                                  on_done=lambda stats, error, i=index: (finished.__setitem__(i, stats),
                                                                         done[i].set())))
    for event in done:
        assert event.wait(60)
    return list(zip(ids, finished, strict=True))


def reply(engine: BatchEngine, prompt: list[int]) -> tuple[list[int], GenerationStats]:
    return replies(engine, [prompt])[0]


def test_common_prefix_chains_and_what_a_row_can_skip():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([], [1]) == 0
    assert prefix_chains([[1, 2], [1, 2, 3], [1, 2, 3, 4], [9], [1, 2]]) == [[0, 1, 2], [3], [4]]
    memory = RowMemory(ids=[1, 2, 3, 4, 5, 6], checkpoints={3: {}})
    assert reusable(memory, [1, 2, 3, 4, 5, 6, 7], recurrent=False) == 6
    assert reusable(memory, [1, 2, 3, 4, 5, 6], recurrent=False) == 5  # one id is always read, for its logits
    assert reusable(memory, [1, 2, 3, 4, 9, 9], recurrent=False) == 4
    # A Mamba-2 state continues from the end of the row or from a checkpoint, nowhere else.
    assert reusable(memory, [1, 2, 3, 4, 5, 6, 7], recurrent=True) == 6
    assert reusable(memory, [1, 2, 3, 4, 9, 9], recurrent=True) == 3
    assert reusable(memory, [1, 2, 9], recurrent=True) == 0
    # A busy row's live Mamba-2 state keeps moving: another row can take only its checkpoints.
    assert reusable(memory, [1, 2, 3, 4, 5, 6, 7], recurrent=True, busy=True) == 3
    assert reusable(memory, [1, 2, 3, 4, 5, 6, 7], recurrent=False, busy=True) == 6
    memory.keep(2)
    assert memory.ids == [1, 2] and not memory.checkpoints
    for read in range(1, 12):  # the earliest checkpoints stay (shared prefixes), and the latest (the next turn)
        memory.remember(read, {})
    assert sorted(memory.checkpoints) == [*range(1, MAX_CHECKPOINTS), 11]


@pytest.mark.parametrize("shape", SHAPES)
def test_a_next_turn_reads_only_what_it_adds_and_decodes_the_fresh_tokens(shape: str):
    model = model_of(shape)
    engine = BatchEngine(model, None, slots=2)
    first = list(range(10, 40))
    replied, stats = reply(engine, first)
    assert stats.cached_tokens == 0
    # The chat app's next turn: the reply as the model wrote it, then more. The last reply token was never fed.
    extended = [*first, *replied, 77, 78, 79]
    ids, stats = reply(engine, extended)
    assert stats.cached_tokens == len(first) + len(replied) - 1
    assert ids == greedy_ids(model, extended, GREEDY.max_new_tokens)
    # The chat eval's next turn: the reference reply in place of the model's. Attention keeps every position the
    # two share; a Mamba-2 layer resumes from the states saved where the last prompt ended.
    replied, _ = reply(engine, extended)
    other = [*extended, (replied[0] + 1) % 300, 201, 202]
    ids, stats = reply(engine, other)
    assert stats.cached_tokens == len(extended)
    assert ids == greedy_ids(model, other, GREEDY.max_new_tokens)


def test_a_request_takes_the_slot_holding_its_longest_prefix():
    model = model_of("attention")
    engine = BatchEngine(model, None, slots=3)
    system = list(range(50, 70))
    replies(engine, [[*system, 1, 2, 3], [*system, 4, 5, 6], [9, 9, 9]])  # one slot each
    prompt = [*system, 4, 5, 6, 7]
    ids, stats = reply(engine, prompt)
    assert stats.cached_tokens == len(system) + 3
    assert ids == greedy_ids(model, prompt, GREEDY.max_new_tokens)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_prefix_a_busy_slot_holds_is_copied_into_a_free_one(shape: str):
    """A system prompt every client sends is read once: a second request copies it from the busy slot."""
    model = model_of(shape)
    engine = BatchEngine(model, None, slots=2)
    system = list(range(50, 80))
    first_prompt = [*system, 1, 2, 3]
    started, second_queued, cancel, first_done = (threading.Event() for _ in range(4))

    def hold_the_engine(_: str) -> None:  # on the engine's thread: the first request is still decoding after it
        started.set()
        assert second_queued.wait(60)

    engine.submit(SlotRequest(first_prompt, GenerationConfig(temperature=0.0, max_new_tokens=20), cancel=cancel,
                              on_text=hold_the_engine, on_done=lambda *_: first_done.set()))
    assert started.wait(60)
    # Keys and values of any shared prefix can be copied; a Mamba-2 state only from a checkpoint: where the first
    # prompt ended, or (chunks of 8) where a chunk of its scan ended, 24 ids into the system prompt's 30.
    prompt = [*first_prompt, 8, 9] if shape == "hybrid" else [*system, 4, 5, 6]
    cached = {"hybrid": len(first_prompt), "hybrid-8": 24}.get(shape, len(system))
    ids: list[int] = []
    finished: list[GenerationStats] = []
    second_done = threading.Event()
    engine.submit(SlotRequest(prompt, GREEDY, on_text=lambda text: ids.append(int(text)),
                              on_done=lambda stats, _: (finished.append(stats), second_done.set())))
    second_queued.set()
    assert second_done.wait(60)
    cancel.set()
    assert first_done.wait(60)
    assert finished[0].cached_tokens == cached
    assert ids == greedy_ids(model, prompt, GREEDY.max_new_tokens)


def test_a_hybrid_conversation_resumes_a_system_prompt_it_shares_where_a_chunk_of_the_scan_ended():
    """Conversations that share only their system prompt and tools: the next one reads from the last chunk's end
    inside the shared part, not from the start, and decodes what a fresh engine does."""
    model = model_of("hybrid-8")
    engine = BatchEngine(model, None, slots=2)
    system = list(range(50, 71))  # 21 ids: the scan's chunks end at 8 and 16 inside them
    reply(engine, [*system, 1, 2, 3])
    second = [*system, 4, 5, 6]
    ids, stats = reply(engine, second)
    assert stats.cached_tokens == 16
    assert ids == greedy_ids(model, second, GREEDY.max_new_tokens)
    third = [*system[:12], 7, 7, 7]  # shares 12 ids: the checkpoint at 8 is still there
    ids, stats = reply(engine, third)
    assert stats.cached_tokens == 8
    assert ids == greedy_ids(model, third, GREEDY.max_new_tokens)


@pytest.mark.parametrize("shape", ["attention", "hybrid", "hybrid-8"])
def test_chained_turns_decode_what_fresh_ones_do_reading_less(shape: str):
    model = model_of(shape, seed=1)
    generator = torch.Generator().manual_seed(0)
    prompts = []
    for _ in range(5):  # five conversations of three turns, each turn's prompt extending the last
        turn: list[int] = []
        for _ in range(3):
            turn = [*turn, *torch.randint(0, 300, (7,), generator=generator).tolist()]
            prompts.append(turn)
    replies = stream_chains(BatchEngine(model, None, slots=2), prompts, GREEDY)
    got = [[int(text) for text in item] for item in replies]
    assert got == [greedy_ids(model, prompt, GREEDY.max_new_tokens) for prompt in prompts]
    assert [item.stats.cached_tokens for item in replies] == [0, 7, 14] * 5


@pytest.mark.parametrize("shape", SHAPES)
def test_cogni_chats_next_turn_reads_only_what_it_adds(shape: str):
    model = model_of(shape)
    decoder = Decoder(model, None)
    first = list(range(10, 40))
    replied = list(decoder.stream_ids(first, GREEDY))
    extended = [*first, *replied, 77, 78]
    ids = list(decoder.stream_ids(extended, GREEDY))
    assert decoder.stats.cached_tokens == len(first) + len(replied) - 1
    assert ids == greedy_ids(model, extended, GREEDY.max_new_tokens)
    other = [*extended, (ids[0] + 1) % 300, 5]  # not the reply the model wrote
    ids = list(decoder.stream_ids(other, GREEDY))
    assert decoder.stats.cached_tokens == len(extended)
    assert ids == greedy_ids(model, other, GREEDY.max_new_tokens)
    unrelated = [3, 4, 5]
    assert list(decoder.stream_ids(unrelated, GREEDY)) == greedy_ids(model, unrelated, GREEDY.max_new_tokens)
    assert decoder.stats.cached_tokens == 0


def test_cogni_chat_resumes_an_edited_message_where_a_chunk_of_the_hybrids_scan_ended():
    model = model_of("hybrid-8")
    decoder = Decoder(model, None)
    first = list(range(10, 40))  # 30 ids: the scan's chunks end at 8, 16 and 24 inside them
    list(decoder.stream_ids(first, GREEDY))
    edited = [*first[:20], 99, 98]  # the message after the 20th id rewritten
    ids = list(decoder.stream_ids(edited, GREEDY))
    assert decoder.stats.cached_tokens == 16
    assert ids == greedy_ids(model, edited, GREEDY.max_new_tokens)
