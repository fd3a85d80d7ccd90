"""Model families: Llama 3.2 / SmolLM, Qwen 2, Qwen 3 and Gemma 3 checkpoints that transformers builds and saves
import, compute transformers' logits, decode with the cache as without it, and export back as themselves."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
import torch
import transformers

from cognimamba.errors import CogniError
from cognimamba.interop.gguf_file import export_gguf
from cognimamba.interop.hf_dir import export_hf
from cognimamba.interop.import_hf import import_hf
from cognimamba.model.build import new_cache
from cognimamba.runs.loading import load_run
from tests.interop.test_import_hf import plain_bpe

VOCAB = 300
# The import keeps the rows of the tokenizer's tokens (the padding past them goes) and appends the chat tokens.
TOKENS = plain_bpe(280).get_vocab_size()
SHAPE = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 96, "initializer_range": 0.2}
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
FAMILIES = {
    # Llama 3.2: tied embeddings, RoPE scaling (the original context shortened so the scaled band matters here)
    "llama3.2": lambda: transformers.LlamaConfig(**SHAPE, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True),
    # SmolLM2: a plain Llama with a large theta and tied embeddings
    "smollm": lambda: transformers.LlamaConfig(**SHAPE, rope_parameters={"rope_type": "default",
                                                                        "rope_theta": 100000.0},
                                               tie_word_embeddings=True, rms_norm_eps=1e-5),
    "qwen2": lambda: transformers.Qwen2Config(**SHAPE, tie_word_embeddings=False),
    "qwen3": lambda: transformers.Qwen3Config(**SHAPE, head_dim=32, tie_word_embeddings=True),
    # Gemma 3: head_dim not dim / heads, every third layer global here, a window of 8 the longer inputs pass
    "gemma3": lambda: transformers.Gemma3TextConfig(**SHAPE, head_dim=32, sliding_window=8, query_pre_attn_scalar=24,
                                                    sliding_window_pattern=3,
                                                    rope_parameters={"full_attention": {"rope_type": "linear",
                                                                                        "factor": 2.0,
                                                                                        "rope_theta": 100000.0},
                                                                     "sliding_attention": {"rope_type": "default",
                                                                                           "rope_theta": 10000.0}}),
}
ARCHITECTURES = {"llama3.2": "LlamaForCausalLM", "smollm": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "qwen3": "Qwen3ForCausalLM", "gemma3": "Gemma3ForCausalLM"}
LENGTHS = (1, 7, 20, 45)  # 20 and 45 are past Gemma's window of 8


def randomize(model: torch.nn.Module) -> None:
    """Every weight away from its initial value (norms off 1 or 0, biases nonzero), so a mix-up would show."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)


def save_checkpoint(model: torch.nn.Module, directory: Path) -> Path:
    model.save_pretrained(directory)
    plain_bpe(280).save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    hf_model = transformers.AutoModelForCausalLM.from_config(FAMILIES[request.param]()).eval()
    randomize(hf_model)
    root = tmp_path_factory.mktemp(request.param)
    source = save_checkpoint(hf_model, root / "hf")
    run, _ = import_hf(source, root / "run")
    return request.param, hf_model, load_run(run), root


def batch(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TOKENS, (2, length), generator=torch.Generator().manual_seed(seed))


def test_imported_forward_equals_transformers(family) -> None:
    name, hf_model, run, _ = family
    assert run.config.model.family == ("llama" if name in ("llama3.2", "smollm") else name)
    for length in LENGTHS:
        ids = batch(length)
        with torch.no_grad():
            expected = hf_model(ids).logits
            got = run.model(ids)[..., :TOKENS]
        torch.testing.assert_close(got, expected[..., :TOKENS], atol=1e-4, rtol=0, msg=f"{name} at length {length}")


def test_cache_decode_equals_full_forward(family) -> None:
    name, _, run, _ = family
    ids = batch(40, seed=2)
    with torch.no_grad():
        full = run.model(ids)
        cache = new_cache(run.config.model, 2, 40)
        prefill = run.model(ids[:, :5], cache=cache, start=0)
        steps = [run.model(ids[:, position:position + 1], cache=cache, start=position) for position in range(5, 40)]
    decoded = torch.cat([prefill, *steps], dim=1)
    torch.testing.assert_close(decoded, full, atol=1e-4, rtol=0, msg=name)


def test_hf_export_is_the_same_architecture_with_equal_logits(family, tmp_path: Path) -> None:
    name, hf_model, run, root = family
    out = export_hf(root / "run", tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [ARCHITECTURES[name]]
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(back).__name__ == ARCHITECTURES[name]
    for length in (7, 45):
        ids = batch(length, seed=3)
        with torch.no_grad():
            torch.testing.assert_close(back(ids).logits[..., :TOKENS], hf_model(ids).logits[..., :TOKENS], atol=1e-4,
                                       rtol=0)
            torch.testing.assert_close(back(ids).logits, run.model(ids), atol=1e-4, rtol=0)


def test_gguf_export_writes_the_matching_llama_cpp_architecture(family, tmp_path: Path) -> None:
    name, _, run, root = family
    model = run.config.model
    if name == "gemma3":  # llama.cpp's gemma3 fixes every sixth layer global: refused by name
        with pytest.raises(CogniError, match=r"^model\.full_attention_every = 3 cannot be exported to GGUF"):
            export_gguf(root / "run", tmp_path / "refused.gguf")
        return
    path = export_gguf(root / "run", tmp_path / "model.gguf")
    reader = gguf.GGUFReader(path)
    arch = {"llama3.2": "llama", "smollm": "llama"}.get(name, name)
    assert reader.fields["general.architecture"].contents() == arch
    assert reader.fields[f"{arch}.attention.key_length"].contents() == model.attention_head_dim
    names = {tensor.name for tensor in reader.tensors}
    assert ("blk.0.attn_q.bias" in names) == (name == "qwen2")
    assert ("blk.0.attn_q_norm.weight" in names) == (name == "qwen3")
    assert ("rope_freqs.weight" in names) == (name == "llama3.2")


def test_gemma3_gguf_layout_and_norm_shift(tmp_path: Path) -> None:
    """A Gemma 3 with llama.cpp's fixed pattern exports: sandwich norms under its names, stored as 1 + w."""
    config = transformers.Gemma3TextConfig(**{**SHAPE, "num_hidden_layers": 6}, head_dim=32, sliding_window=8,
                                           query_pre_attn_scalar=32)
    torch.manual_seed(0)
    hf_model = transformers.Gemma3ForCausalLM(config).eval()
    randomize(hf_model)
    run, _ = import_hf(save_checkpoint(hf_model, tmp_path / "hf"), tmp_path / "run")
    reader = gguf.GGUFReader(export_gguf(run, tmp_path / "model.gguf"))
    assert reader.fields["general.architecture"].contents() == "gemma3"
    assert reader.fields["gemma3.attention.sliding_window"].contents() == 8
    stored = {tensor.name: torch.from_numpy(tensor.data.copy()) for tensor in reader.tensors}
    for ours, theirs in [("post_attention_norm", "post_attention_layernorm"), ("ffn_norm", "pre_feedforward_layernorm"),
                         ("post_ffw_norm", "post_feedforward_layernorm"), ("attn_q_norm", "self_attn.q_norm")]:
        weight = hf_model.get_parameter(f"model.layers.2.{theirs}.weight").detach()
        torch.testing.assert_close(stored[f"blk.2.{ours}.weight"], weight + 1)


def test_gemma3_vision_language_checkpoint_imports_its_text_tower(tmp_path: Path) -> None:
    text = transformers.Gemma3TextConfig(**SHAPE, head_dim=32, sliding_window=8, query_pre_attn_scalar=32)
    vision = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    config = transformers.Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                       mm_tokens_per_image=4, image_token_index=VOCAB - 1, boi_token_index=VOCAB - 3,
                                       eoi_token_index=VOCAB - 2)
    torch.manual_seed(0)
    hf_model = transformers.Gemma3ForConditionalGeneration(config).eval()
    randomize(hf_model)
    run = load_run(import_hf(save_checkpoint(hf_model, tmp_path / "hf"), tmp_path / "run")[0])
    assert run.config.model.family == "gemma3" and run.config.model.sliding_window == 8
    ids = batch(20)
    with torch.no_grad():
        torch.testing.assert_close(run.model(ids)[..., :TOKENS], hf_model(input_ids=ids).logits[..., :TOKENS],
                                   atol=1e-4, rtol=0)


@pytest.mark.parametrize(("config", "named"), [
    (lambda: transformers.Qwen3MoeConfig(**SHAPE, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
     "mixture-of-experts"),
    (lambda: transformers.MixtralConfig(**SHAPE, num_local_experts=4), "mixture-of-experts"),
    (lambda: transformers.Qwen2VLConfig(text_config=SHAPE), "vision tower"),
    (lambda: transformers.Gemma2Config(**SHAPE), "Gemma2ForCausalLM"),
    (lambda: transformers.Qwen2Config(**SHAPE, use_sliding_window=True, sliding_window=8, max_window_layers=1),
     "use_sliding_window"),
    (lambda: transformers.LlamaConfig(**SHAPE, rope_parameters={"rope_type": "yarn", "factor": 4.0,
                                                                "rope_theta": 10000.0,
                                                                "original_max_position_embeddings": 32}),
     "RoPE scaling of type 'yarn'"),
    (lambda: transformers.LlamaConfig(**SHAPE, attention_bias=True), "attention_bias"),
])
def test_what_cannot_be_imported_is_refused_by_name(tmp_path: Path, config, named: str) -> None:
    hf_config = config()
    if not getattr(hf_config, "architectures", None):
        hf_config.architectures = [{"Qwen3MoeConfig": "Qwen3MoeForCausalLM", "MixtralConfig": "MixtralForCausalLM",
                                    "Qwen2VLConfig": "Qwen2VLForConditionalGeneration",
                                    "Gemma2Config": "Gemma2ForCausalLM"}.get(type(hf_config).__name__,
                                                                             "LlamaForCausalLM")]
        if type(hf_config).__name__ == "Qwen2Config":
            hf_config.architectures = ["Qwen2ForCausalLM"]
    hf_config.save_pretrained(tmp_path / "hf")
    with pytest.raises(CogniError, match=named) as error:
        import_hf(tmp_path / "hf", tmp_path / "run")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def gemma3_270m_config(vocab_size: int) -> transformers.Gemma3TextConfig:
    """google/gemma-3-270m's config.json, the vocabulary aside."""
    return transformers.Gemma3TextConfig(vocab_size=vocab_size, hidden_size=640, intermediate_size=2048,
                                         num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
                                         head_dim=256, max_position_embeddings=32768, query_pre_attn_scalar=256,
                                         sliding_window=512, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
                                         rms_norm_eps=1e-6, tie_word_embeddings=True)


def test_gemma3_270m_profile_is_the_released_shape() -> None:
    """Our `gemma3-270m` model and transformers' Gemma 3 270M have the same parameters, 268,098,176 of them."""
    from cognimamba.config.profiles import MODEL_PRESETS, parameter_counts
    from cognimamba.interop.hf_config import model_config_from_hf
    from cognimamba.model.transformer import LanguageModel, num_parameters

    ours = MODEL_PRESETS["gemma3-270m"]()
    with torch.device("meta"):
        hf_model = transformers.Gemma3ForCausalLM(gemma3_270m_config(262_144))
        model = LanguageModel(ours)
    hf_count = sum(param.numel() for param in hf_model.parameters())
    assert hf_count == num_parameters(model)[0] == parameter_counts(ours)[0] == 268_098_176
    imported = model_config_from_hf(json.loads(gemma3_270m_config(262_144).to_json_string()))
    assert imported == ours.__class__(**{**ours.__dict__, "max_seq_len": 32768})


@pytest.mark.slow
def test_gemma3_270m_at_full_size_imports_exactly(tmp_path: Path) -> None:
    """The whole 270M model (a small vocabulary keeps it quick): logits past the 512-token window, and the cache."""
    torch.manual_seed(0)
    hf_model = transformers.Gemma3ForCausalLM(gemma3_270m_config(VOCAB)).eval()
    randomize(hf_model)
    run = load_run(import_hf(save_checkpoint(hf_model, tmp_path / "hf"), tmp_path / "run", max_seq_len=1024)[0])
    ids = torch.randint(0, TOKENS, (1, 600), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf_model(ids).logits[..., :TOKENS]
        got = run.model(ids)
        torch.testing.assert_close(got[..., :TOKENS], expected, atol=1e-4, rtol=0)
        cache = new_cache(run.config.model, 1, 600)
        run.model(ids[:, :590], cache=cache, start=0)
        steps = [run.model(ids[:, position:position + 1], cache=cache, start=position) for position in range(590, 600)]
    torch.testing.assert_close(torch.cat(steps, dim=1), got[:, 590:], atol=1e-4, rtol=0)
