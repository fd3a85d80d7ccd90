"""The generation engine: cached decoding, sampling, UTF-8-safe streaming, stop strings, cancellation, stats."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cognimamba.config.schema import GenerationConfig, ModelConfig
from cognimamba.inference.decode_step import DecodeStep
from cognimamba.inference.decoding import ChatModel, Decoder, greedy_ids
from cognimamba.inference.sampling import sample_next, seeded_generator
from cognimamba.inference.text_stream import REPLACEMENT_CHAR, TextStream
from cognimamba.model.tokenizer import encode, train_tokenizer
from cognimamba.model.transformer import DecodeCache, LanguageModel
from cognimamba.runs.loading import load_run

MULTILINGUAL = [
    "Le café était très chaud ☕ et le gâteau délicieux 🎂.",
    "東京の天気は晴れです。今日はとても暑い日でした。",
    "Emoji parade: 🐱🐶🦊🐻 and flags 🇫🇷🇯🇵, math ∑∫√ and Ελληνικά letters.",
    "Привет, как дела? 你好，世界！ 안녕하세요 👋🏽",
]


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_run(tiny_run)


@pytest.fixture(scope="module")
def multibyte_tokenizer():
    """Few merges on purpose: most non-ASCII characters end up split across several byte tokens."""
    return train_tokenizer(MULTILINGUAL * 20, vocab_size=300)


def test_cached_decoding_equals_uncached_greedy(loaded):
    prompt = encode(loaded.tokenizer, "Once upon a time, a little")
    cached = greedy_ids(loaded.model, prompt, 30, use_cache=True)
    uncached = greedy_ids(loaded.model, prompt, 30, use_cache=False)
    assert len(cached) == 30
    assert cached == uncached


def test_cached_equals_uncached_with_sliding_window_and_gqa():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=300, dim=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=96,
                         sliding_window=8, full_attention_every=2, init_std=0.3)
    model = LanguageModel(config)
    prompt = list(range(5, 17))
    cached = greedy_ids(model, prompt, 70, use_cache=True)
    assert cached == greedy_ids(model, prompt, 70, use_cache=False)
    assert len(cached) == 70  # the decode ran well past the 8-token window


def test_compiled_decoding_gives_the_eager_tokens(loaded):
    prompt = encode(loaded.tokenizer, "Once upon a time")
    options = GenerationConfig(temperature=0.0, max_new_tokens=12)
    compiled = Decoder(loaded.model, None, compile=True)
    assert list(compiled.stream_ids(prompt, options)) == list(Decoder(loaded.model, None).stream_ids(prompt, options))
    assert compiled.step.compile_error is None and compiled.step.compile_seconds > 0
    assert list(compiled.stream_ids(prompt[:2], options)) == greedy_ids(loaded.model, prompt[:2], 12)  # no recompile


def test_compiled_steps_of_two_models_alike_in_shape_keep_their_own_graphs() -> None:
    """A compiled step checks few guards on its model's modules (decode_step.kept_guards) and has code of its own,
    so a second model with the same tensors but another MLP never runs the first one's graph."""
    config = ModelConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=48,
                         init_std=0.5)
    torch.manual_seed(0)
    silu = LanguageModel(config).eval()
    gelu = LanguageModel(dataclasses.replace(config, mlp="geglu_tanh")).eval()
    gelu.load_state_dict(silu.state_dict())
    tokens = torch.tensor([[5]])
    logits = {}
    with torch.inference_mode():
        for name, model in (("silu", silu), ("gelu", gelu)):
            eager = model(tokens, cache=DecodeCache(config, 1), start=2, last_only=True)[:, -1]
            logits[name] = DecodeStep(model, torch.device("cpu"), compile=True)(tokens, DecodeCache(config, 1), 2)
            torch.testing.assert_close(logits[name], eager, rtol=1e-5, atol=1e-5)
    assert (logits["silu"] - logits["gelu"]).abs().max() > 0.1  # so a graph run on the wrong model would show


def test_a_failed_compile_falls_back_to_eager_and_says_why(loaded, monkeypatch):
    def no_compiler(model, **settings):
        def compiled(*args, **kwargs):
            raise RuntimeError("InductorError: no C++ compiler found\nmore detail")
        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    decoder = Decoder(loaded.model, None, compile=True)
    prompt = encode(loaded.tokenizer, "Once upon a time")
    assert list(decoder.stream_ids(prompt, GenerationConfig(temperature=0.0, max_new_tokens=6))) == \
        greedy_ids(loaded.model, prompt, 6)
    assert decoder.step.compile_error == "RuntimeError: InductorError: no C++ compiler found"
    assert decoder.step.compiled is None


def test_greedy_stream_is_deterministic_and_matches_ids(loaded):
    decoder = Decoder(loaded.model, loaded.tokenizer)
    prompt = encode(loaded.tokenizer, "The dog")
    options = GenerationConfig(temperature=0.0, max_new_tokens=25)
    ids = list(decoder.stream_ids(prompt, options))
    first = decoder.generate(prompt, options)
    second = decoder.generate(prompt, options)
    assert first == second == loaded.tokenizer.decode(ids, skip_special_tokens=False)
    assert ids == greedy_ids(loaded.model, prompt, 25)[:len(ids)]


def test_seeded_sampling_is_reproducible(loaded):
    decoder = Decoder(loaded.model, loaded.tokenizer)
    prompt = encode(loaded.tokenizer, "Once")
    texts = {seed: decoder.generate(prompt, GenerationConfig(temperature=1.0, top_k=0, top_p=1.0,
                                                             max_new_tokens=30, seed=seed)) for seed in (1, 2)}
    assert decoder.generate(prompt, GenerationConfig(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=30,
                                                     seed=1)) == texts[1]
    assert texts[1] != texts[2]


def test_sample_next_filters():
    logits = torch.tensor([1.0, 3.0, 2.0, -1.0])
    generator = torch.Generator().manual_seed(0)
    assert sample_next(logits, GenerationConfig(temperature=0.0), None) == 1
    for _ in range(20):
        assert sample_next(logits, GenerationConfig(temperature=1.0, top_k=1, top_p=1.0), generator) == 1
        assert sample_next(logits, GenerationConfig(temperature=1.0, top_k=0, top_p=0.01), generator) == 1
        assert sample_next(logits, GenerationConfig(temperature=5.0, top_k=2, top_p=1.0), generator) in (1, 2)
    # A repetition penalty makes an already-seen favourite less likely than the runner-up.
    penalized = GenerationConfig(temperature=0.0, repetition_penalty=2.0)
    assert sample_next(logits, penalized, None, previous=torch.tensor([1])) == 2


def test_a_negative_seed_means_a_fresh_random_draw():
    assert seeded_generator(GenerationConfig(seed=-1).seed) is None
    assert seeded_generator(5).initial_seed() == 5


def test_text_stream_never_splits_a_character(multibyte_tokenizer):
    tokenizer = multibyte_tokenizer
    for text in MULTILINGUAL:
        ids = encode(tokenizer, text)
        assert len(ids) > len(text) // 2  # the tokenizer really splits characters into bytes
        stream = TextStream(tokenizer, stop=[])
        deltas = [stream.push(token) for token in ids]
        deltas.append(stream.finish())
        assert "".join(deltas) == text
        assert not any(REPLACEMENT_CHAR in delta for delta in deltas)
        assert "" in deltas[:-1]  # some tokens held back half a character


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_text_stream_round_trips_any_text(multibyte_tokenizer, text):
    stream = TextStream(multibyte_tokenizer, stop=[])
    deltas = [stream.push(token) for token in encode(multibyte_tokenizer, text)] + [stream.finish()]
    assert "".join(deltas) == text
    if REPLACEMENT_CHAR not in text:
        assert not any(REPLACEMENT_CHAR in delta for delta in deltas)


def test_text_stream_stop_strings(multibyte_tokenizer):
    tokenizer = multibyte_tokenizer
    text = "Le café 🎂 était très chaud STOP et délicieux"
    stream = TextStream(tokenizer, stop=["STOP", "never-there"])
    pieces = []
    for token in encode(tokenizer, text):
        pieces.append(stream.push(token))
        assert "S" not in "".join(pieces)  # the start of a possible stop string is held back, not emitted
        if stream.stopped:
            break
    assert stream.stopped
    assert "".join(pieces) + stream.finish() == "Le café 🎂 était très chaud "


def test_decoder_stops_at_a_stop_string(loaded):
    decoder = Decoder(loaded.model, loaded.tokenizer)
    prompt = encode(loaded.tokenizer, "Once upon a time")
    full = decoder.generate(prompt, GenerationConfig(temperature=0.0, max_new_tokens=40))
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), full
    stopped = "".join(decoder.stream(prompt, GenerationConfig(temperature=0.0, max_new_tokens=40), stop=[stop]))
    assert stopped == full[:full.index(stop)]
    assert decoder.stats.stop_reason == "stop_string"


def test_cancel_stops_between_tokens_and_stats_are_reported(loaded):
    decoder = Decoder(loaded.model, loaded.tokenizer)
    prompt = encode(loaded.tokenizer, "Once upon a time")
    cancel = threading.Event()
    ids = []
    for token in decoder.stream_ids(prompt, GenerationConfig(temperature=0.0, max_new_tokens=40), cancel):
        ids.append(token)
        if len(ids) == 5:
            cancel.set()
    stats = decoder.stats
    assert len(ids) == 5 and stats.stop_reason == "cancelled"
    assert stats.prompt_tokens == len(prompt) and stats.generated_tokens == 5
    assert stats.time_to_first_token > 0 and stats.tokens_per_second > 0


def test_generation_ends_at_the_context_like_the_uncached_reference(loaded):
    decoder = Decoder(loaded.model, loaded.tokenizer)
    context = loaded.config.model.max_seq_len
    prompt = encode(loaded.tokenizer, "Once upon a time")
    to_the_end = greedy_ids(loaded.model, prompt, 10_000, use_cache=True)  # no stop tokens without a tokenizer
    assert len(prompt) + len(to_the_end) == context
    assert to_the_end == greedy_ids(loaded.model, prompt, 10_000, use_cache=False)
    ids = list(decoder.stream_ids(prompt, GenerationConfig(temperature=0.0, max_new_tokens=10_000)))
    assert ids == to_the_end[:len(ids)]
    assert decoder.stats.stop_reason == ("context" if len(ids) == len(to_the_end) else "stop_token")
    assert decoder.stats.stop_reason in ("context", "stop_token")
    with pytest.raises(ValueError, match="does not fit"):
        list(decoder.stream_ids(list(range(3, 3 + context)), GenerationConfig()))


def test_chat_model_counts_and_streams(loaded):
    model = ChatModel.from_run(loaded)
    assert model.context_length == loaded.config.model.max_seq_len
    assert model.defaults == loaded.config.generation
    assert model.count_tokens("Once upon a time") == len(encode(loaded.tokenizer, "Once upon a time"))
    text = "".join(model.stream("Once upon a time", GenerationConfig(temperature=0.0, max_new_tokens=8)))
    assert text and model.stats.generated_tokens <= 8
    model.warm_up()  # TextModel's whole surface, without asking what the model can do
    assert model.notice is None and model.top_alternatives == 0
    model.close()
    model.close()
    assert "".join(model.stream("Once upon a time", GenerationConfig(temperature=0.0, max_new_tokens=8))) == text


def test_token_choices_are_the_models_probabilities_on_request(loaded):
    """For the chat app's inspector: greedy picks the likeliest token, so it is the first alternative."""
    decoder = Decoder(loaded.model, loaded.tokenizer)
    prompt = encode(loaded.tokenizer, "Once upon a time")
    settings = GenerationConfig(temperature=0.0, max_new_tokens=8)
    plain = list(decoder.stream_ids(prompt, settings))
    assert decoder.stats.token_choices == []  # nothing recorded unless asked
    ids = list(decoder.stream_ids(prompt, settings, top_alternatives=5))
    assert ids == plain and len(decoder.stats.token_choices) == len(ids)
    for token_id, choice in zip(ids, decoder.stats.token_choices, strict=True):
        assert len(choice.alternatives) == 5 and choice.alternatives[0] == (choice.token, choice.probability)
        assert choice.token == loaded.tokenizer.decode([token_id], skip_special_tokens=False)
        assert 0 < sum(p for _, p in choice.alternatives) <= 1 + 1e-6


def test_decode_threads_follow_the_weight_bytes_rule():
    from cognimamba.inference.decode_step import DECODE_BYTES_PER_THREAD, DecodeStep, decode_threads

    def weights_of(megabytes: int) -> torch.nn.Module:  # fp32 on the meta device: sized, never allocated
        return torch.nn.Linear(1000, megabytes * 250, bias=False, device="meta")

    cpu = torch.device("cpu")
    assert DECODE_BYTES_PER_THREAD == 32_000_000
    assert decode_threads(weights_of(20), cpu, available=8) == 1  # the cpu profile: one thread
    assert decode_threads(weights_of(64), cpu, available=8) == 2
    assert decode_threads(weights_of(200), cpu, available=8) == 6  # a 50M-parameter fp32 model
    assert decode_threads(weights_of(200), cpu, available=2) == 2  # ... takes every core there is
    assert decode_threads(weights_of(200), torch.device("cuda"), available=8) is None
    assert DecodeStep(weights_of(20), cpu, threads=3).threads == 3  # --threads overrides the rule
