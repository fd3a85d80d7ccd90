"""Loading a run dir someone handed over: its config is bounded and checked against the weights before any memory
is spent on the model, and chatting with it takes memory for the reply, not for the whole context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cognimamba.config.schema import MAX_CONTEXT_LENGTH, Config, GenerationConfig, ModelConfig
from cognimamba.errors import CogniError
from cognimamba.inference.decoding import ChatModel
from cognimamba.model.tokenizer import train_tokenizer
from cognimamba.model.transformer import LanguageModel
from cognimamba.runs import loading
from cognimamba.runs.layout import CONFIG, WEIGHTS
from cognimamba.runs.loading import load_run, write_run_files
from cognimamba.runs.tensors import model_state, save_weights


def write_run(run: Path, max_seq_len: int = 64) -> Path:
    """A tiny untrained run dir, written the way `cogni train` writes one."""
    tokenizer = train_tokenizer(["the cat sat on the mat", "a dog ran in the park"] * 20, vocab_size=300)
    model_config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), dim=32, n_layers=2, n_heads=2, n_kv_heads=1,
                               ffn_dim=64, max_seq_len=max_seq_len)
    config = Config(model=model_config)
    model = LanguageModel(model_config)
    write_run_files(run, config, model, tokenizer)
    save_weights(run / WEIGHTS, model_state(model))
    return run


def edit_config(run: Path, **model_fields: int) -> None:
    payload = json.loads((run / CONFIG).read_text())
    payload["model"].update(model_fields)
    (run / CONFIG).write_text(json.dumps(payload))


def test_a_tiny_run_loads(tmp_path: Path) -> None:
    loaded = load_run(write_run(tmp_path / "run"))
    assert loaded.config.model.dim == 32 and not loaded.model.training


def test_a_context_past_the_bound_is_refused_naming_the_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    edit_config(run, max_seq_len=MAX_CONTEXT_LENGTH * 2)
    with pytest.raises(CogniError, match=rf"{CONFIG}: model.max_seq_len = {MAX_CONTEXT_LENGTH * 2} is too large; "
                                         rf"it must be <= {MAX_CONTEXT_LENGTH}"):
        load_run(run)


@pytest.mark.parametrize(("fields", "message"), [
    ({"n_layers": 48}, r"missing \['layers.10.attention.proj.weight'"),
    ({"dim": 1024, "n_heads": 8, "n_kv_heads": 4}, r"tok_embeddings.weight has shape \(\d+, 32\) but config.json "
                                                     r"implies \(\d+, 1024\)"),
])
def test_weights_are_checked_against_the_config_before_the_model_is_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, int], message: str) -> None:
    run = write_run(tmp_path / "run")
    edit_config(run, **fields)
    built = []

    def spy(config: ModelConfig) -> LanguageModel:
        model = LanguageModel(config)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(loading, "LanguageModel", spy)
    with pytest.raises(CogniError, match=message):
        load_run(run)
    assert "cpu" not in built  # no memory was spent on a model the weights cannot fill


def test_chat_on_a_long_context_allocates_for_the_reply_only(tmp_path: Path) -> None:
    loaded = load_run(write_run(tmp_path / "run", max_seq_len=MAX_CONTEXT_LENGTH))
    chat = ChatModel.from_run(loaded)
    chat.warm_up()
    reply = "".join(chat.stream("the cat", GenerationConfig(temperature=0.0, max_new_tokens=8)))
    assert isinstance(reply, str) and chat.stats.generated_tokens <= 8
    cache = chat.decoder._cache
    assert cache is not None and cache.max_len < 1024
    assert next(iter(cache.keys.values())).shape[2] == cache.max_len + 1
    assert sum(tensor.numel() for tensor in [*cache.keys.values(), *cache.values.values()]) * 4 < 1_000_000
    # A later, longer reply grows the cache, still short of the whole context.
    prompt = "the cat sat on the mat " * 60
    "".join(chat.stream(prompt, GenerationConfig(temperature=0.0, max_new_tokens=700)))
    assert chat.count_tokens(prompt) + 700 <= chat.decoder._cache.max_len < MAX_CONTEXT_LENGTH
    assert torch.equal(chat.decoder._cache.keys[0][0, 0, -1], torch.zeros(16))  # the spare position stays unused
