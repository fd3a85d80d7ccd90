"""`cogni import-hf`: Llama checkpoints on disk become run dirs that compute what the checkpoint computes."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from cognimamba.config.schema import MAX_CONTEXT_LENGTH, GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.inference.decoding import Decoder, greedy_ids
from cognimamba.interop.hf_dir import export_hf
from cognimamba.interop.import_hf import import_hf
from cognimamba.model.tokenizer import IM_START, SPECIAL_TOKENS, encode
from cognimamba.runs.loading import load_run
from tests.conftest import run_cli
from tests.float_bounds import assert_within, logits_bound
from tests.interop.fixtures import PROMPTS, STORY, make_run


@pytest.mark.slow
def test_import_of_an_export_is_identical(tmp_path: Path) -> None:
    original = make_run(tmp_path / "run", "model.tie_embeddings=false", "generation.temperature=0.5",
                        "generation.top_k=7", seed=5)
    export_hf(original, tmp_path / "hf")
    result = run_cli("import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imported"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "imported")
    assert "lacked" not in result.stderr  # our own tokenizer already has every special token

    ours, back = load_run(original), load_run(tmp_path / "imported")
    # Dropout is a training setting the HF config does not carry; an import starts from the cpu preset's. A run
    # without a family is a Llama, and imports back as one by name.
    assert back.config.model.family == "llama"
    assert back.config.model == dataclasses.replace(ours.config.model, dropout=back.config.model.dropout,
                                                    family="llama")
    assert back.tokenizer.to_str() == ours.tokenizer.to_str()
    assert (back.config.generation.temperature, back.config.generation.top_k) == (0.5, 7)
    assert back.info["imported_from"] == str((tmp_path / "hf").resolve())
    batch = torch.randint(0, ours.config.model.vocab_size, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ours.model(batch), back.model(batch))
    for name, tensor in ours.model.state_dict().items():
        assert torch.equal(tensor, back.model.state_dict()[name]), name


def plain_bpe(vocab_size: int) -> Tokenizer:
    """A byte-level BPE like many Hugging Face models have: none of our chat special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([STORY] * 20, trainer=trainer)
    return tokenizer


@pytest.mark.slow
def test_import_of_a_llama_trained_elsewhere(tmp_path: Path) -> None:
    """A random LlamaForCausalLM (untied head, padded vocabulary) saved by transformers itself."""
    tokenizer = plain_bpe(280)
    size = tokenizer.get_vocab_size()
    config = transformers.LlamaConfig(vocab_size=size + 24, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
                                      rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=5000.0,
                                      initializer_range=0.3)
    torch.manual_seed(0)
    hf_model = transformers.LlamaForCausalLM(config).eval()
    source = tmp_path / "llama"
    hf_model.save_pretrained(source)
    tokenizer.save(str(source / "tokenizer.json"))

    result = run_cli("import-hf", str(source), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "lacked" in result.stderr and IM_START in result.stderr
    run = load_run(tmp_path / "run")
    assert run.config.model.rope_theta == 5000.0 and not run.config.model.tie_embeddings
    # The chat tokens were appended after the tokenizer's own; the vocabulary padding rows were dropped.
    assert run.config.model.vocab_size == size + len(SPECIAL_TOKENS)
    assert [run.tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == list(range(size, size + 10))

    for prompt in PROMPTS:
        ids = encode(run.tokenizer, prompt)
        assert ids == tokenizer.encode(prompt).ids
        with torch.no_grad():
            expected = hf_model(torch.tensor([ids])).logits[..., :size]
            got = run.model(torch.tensor([ids]))
        # transformers sums in its own order (and kernels): within the forward's rounding bound.
        assert_within(got[..., :size], expected, logits_bound(run.model, torch.tensor([ids]))[..., :size])
        # new tokens share one (mean) output row, so they all score the same
        assert torch.allclose(got[..., size:], got[..., size:size + 1].expand_as(got[..., size:]))
    # The run works like any other: greedy decoding with and without the KV cache, and streaming.
    ids = encode(run.tokenizer, PROMPTS[0])
    assert greedy_ids(run.model, ids, 10) == greedy_ids(run.model, ids, 10, use_cache=False)
    text = Decoder(run.model, run.tokenizer).generate(ids, GenerationConfig(temperature=0.0, max_new_tokens=8))
    assert isinstance(text, str)


@pytest.mark.slow
def test_unsupported_checkpoints_are_refused_by_name(tmp_path: Path) -> None:
    gpt2 = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=300)) \
        .save_pretrained(gpt2)
    result = run_cli("import-hf", str(gpt2), "--out", str(tmp_path / "a"))
    assert result.returncode == 2 and "unsupported architecture" in result.stderr and "gpt2" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "a").exists()

    llama = tmp_path / "scaled"
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=4)
    transformers.LlamaForCausalLM(config).save_pretrained(llama)
    plain_bpe(280).save(str(llama / "tokenizer.json"))
    hf_config = json.loads((llama / "config.json").read_text())
    hf_config["rope_scaling"] = {"rope_type": "yarn", "factor": 2.0}
    hf_config["rope_parameters"] = {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0}
    (llama / "config.json").write_text(json.dumps(hf_config))
    result = run_cli("import-hf", str(llama), "--out", str(tmp_path / "b"))
    assert result.returncode == 2 and "RoPE scaling of type 'yarn'" in result.stderr

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({**hf_config, "rope_scaling": None, "rope_parameters": None}))
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    plain_bpe(280).save(str(pickled / "tokenizer.json"))
    result = run_cli("import-hf", str(pickled), "--out", str(tmp_path / "c"))
    assert result.returncode == 2 and "pickle" in result.stderr and "Traceback" not in result.stderr


def test_a_context_longer_than_ours_asks_for_max_seq_len(tmp_path: Path) -> None:
    """Llama 3.1-style checkpoints declare 131072 positions and some more: the refusal names the option that
    imports them, and the option caps the run's context."""
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=2 * MAX_CONTEXT_LENGTH)
    torch.manual_seed(0)
    source = tmp_path / "long"
    transformers.LlamaForCausalLM(config).save_pretrained(source)
    plain_bpe(280).save(str(source / "tokenizer.json"))
    with pytest.raises(CogniError, match=rf"^{re.escape(str(source / 'config.json'))}: max_position_embeddings = "
                                         rf"{2 * MAX_CONTEXT_LENGTH} is longer than the {MAX_CONTEXT_LENGTH} tokens "
                                         rf"cognimamba runs; pass --max-seq-len N \(at most {MAX_CONTEXT_LENGTH}\)"):
        import_hf(source, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    with pytest.raises(CogniError, match=rf"^--max-seq-len {MAX_CONTEXT_LENGTH + 1}: at most {MAX_CONTEXT_LENGTH}"):
        import_hf(source, tmp_path / "refused", max_seq_len=MAX_CONTEXT_LENGTH + 1)
    run, _ = import_hf(source, tmp_path / "run", max_seq_len=4096)
    assert load_run(run).config.model.max_seq_len == 4096


@pytest.mark.slow
def test_import_refuses_to_overwrite(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    export_hf(run, tmp_path / "hf")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = run_cli("import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "taken"))
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.parametrize("missing", ["tokenizer.json", "config.json"])
def test_incomplete_checkpoints_are_clear_errors(tmp_path: Path, missing: str) -> None:
    run = make_run(tmp_path / "run")
    export_hf(run, tmp_path / "hf")
    (tmp_path / "hf" / missing).unlink()
    result = run_cli("import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and missing in result.stderr and "Traceback" not in result.stderr
