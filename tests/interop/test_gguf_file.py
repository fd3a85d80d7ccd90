"""`cogni export --format gguf`: the file reads back equal, and llama.cpp (where installed) decodes as we do."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from cognimamba.errors import CogniError
from cognimamba.inference.decoding import greedy_ids
from cognimamba.interop.chat_template import CHAT_TEMPLATE
from cognimamba.interop.gguf_file import (
    export_gguf,
    gguf_name,
    gguf_pre_tokenizer,
    permute_rope_rows,
    unpermute_rope_rows,
)
from cognimamba.interop.hf_names import to_hf_state_dict
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, PAD, SPECIAL_TOKENS, encode
from cognimamba.model.transformer import apply_rope, rope_tables
from cognimamba.runs.loading import load_run
from cognimamba.runs.tensors import model_state
from tests.conftest import run_cli
from tests.interop.fixtures import PROMPTS, SPLIT_TEXTS, make_run

TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@pytest.fixture(scope="module")
def gguf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("gguf") / "run", "model.tie_embeddings=false", seed=4)


def read_tensor(tensor: gguf.ReaderTensor) -> torch.Tensor:
    """A tensor from the file as torch, in its stored precision."""
    if tensor.tensor_type == gguf.GGMLQuantizationType.BF16:
        raw = np.ascontiguousarray(tensor.data).view(np.int16)
        return torch.from_numpy(raw.copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(tensor.data))


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
def test_gguf_round_trip_is_exact(gguf_run: Path, tmp_path: Path, dtype: str) -> None:
    run = load_run(gguf_run)
    path = export_gguf(gguf_run, tmp_path / "model.gguf", dtype=dtype)
    reader = gguf.GGUFReader(path)
    config = run.config.model

    # The source, in Llama layout and unpermuted, under GGUF names.
    expected = {gguf_name(name): tensor for name, tensor in to_hf_state_dict(model_state(run.model), config).items()}
    stored = {tensor.name: tensor for tensor in reader.tensors}
    assert set(stored) == set(expected)
    assert len(stored) == 2 + 1 + 9 * config.n_layers  # embeddings, final norm, untied output, 9 per layer
    for name, tensor in stored.items():
        values = read_tensor(tensor)
        if name.endswith("attn_q.weight"):
            values = unpermute_rope_rows(values, config.n_heads)
        elif name.endswith("attn_k.weight"):
            values = unpermute_rope_rows(values, config.n_kv_heads)
        want = expected[name] if values.ndim == 1 else expected[name].to(TORCH_DTYPES[dtype])
        assert values.dtype == want.dtype, name
        assert torch.equal(values, want), name
    # Spot-check the mapping against the model itself: layer 1's k rows and v weights.
    kv_dim = config.kv_dim
    qkv = run.model.layers[1].attention.qkv.weight.detach()
    k_stored = unpermute_rope_rows(read_tensor(stored["blk.1.attn_k.weight"]).float(), config.n_kv_heads)
    assert torch.equal(k_stored, qkv[config.dim:config.dim + kv_dim].to(TORCH_DTYPES[dtype]).float())

    tokenizer = run.tokenizer
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.file_type") == {"f32": 0, "f16": 1, "bf16": 32}[dtype]
    assert field(reader, "llama.context_length") == config.max_seq_len
    assert field(reader, "llama.embedding_length") == config.dim
    assert field(reader, "llama.block_count") == config.n_layers
    assert field(reader, "llama.feed_forward_length") == config.ffn_dim
    assert field(reader, "llama.attention.head_count") == config.n_heads
    assert field(reader, "llama.attention.head_count_kv") == config.n_kv_heads
    assert field(reader, "llama.rope.dimension_count") == config.attention_head_dim
    assert field(reader, "llama.rope.freq_base") == pytest.approx(config.rope_theta)
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(config.norm_eps)
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "smollm"
    vocab = tokenizer.get_vocab()
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert tokens == sorted(vocab, key=vocab.get)
    types = field(reader, "tokenizer.ggml.token_type")
    assert [token for token, kind in zip(tokens, types, strict=True) if kind == gguf.TokenType.CONTROL] == \
        [token for token in tokens if token in SPECIAL_TOKENS]
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [m if isinstance(m, str) else " ".join(m) for m in merges]
    assert field(reader, "tokenizer.ggml.bos_token_id") == tokenizer.token_to_id(END_OF_TEXT)
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokenizer.token_to_id(IM_END)
    assert field(reader, "tokenizer.ggml.padding_token_id") == tokenizer.token_to_id(PAD)
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_quantized_gguf_reads_back_with_block_types(tmp_path: Path, dtype: str) -> None:
    # ffn_dim 80 does not split into blocks of 32: ffn_down's rows must fall back to f16.
    source = make_run(tmp_path / "run", "model.tie_embeddings=false", "model.ffn_dim=80", seed=4)
    run = load_run(source)
    path = export_gguf(source, tmp_path / "model.gguf", dtype=dtype)
    reader = gguf.GGUFReader(path)
    config = run.config.model
    quant_type = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[dtype]
    assert field(reader, "general.file_type") == {"q8_0": 7, "q4_0": 2}[dtype]

    expected = {gguf_name(name): tensor for name, tensor in to_hf_state_dict(model_state(run.model), config).items()}
    stored = {tensor.name: tensor for tensor in reader.tensors}
    assert set(stored) == set(expected)
    # Quantizing costs at most one step of a block's scale: 1/127 (q8_0) or 1/8 (q4_0, which clips one end of
    # the range by a step) of its largest weight.
    step = {"q8_0": 1 / 127, "q4_0": 1 / 8}[dtype]
    for name, tensor in stored.items():
        if expected[name].ndim == 1:
            want_type = gguf.GGMLQuantizationType.F32
        elif name.endswith("ffn_down.weight"):
            want_type = gguf.GGMLQuantizationType.F16
        else:
            want_type = quant_type
        assert tensor.tensor_type == want_type, name
        values = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32))
        values = values.reshape(expected[name].shape)
        if name.endswith("attn_q.weight"):
            values = unpermute_rope_rows(values, config.n_heads)
        elif name.endswith("attn_k.weight"):
            values = unpermute_rope_rows(values, config.n_kv_heads)
        largest = expected[name].abs().max().item()
        assert (values - expected[name]).abs().max().item() <= step * largest * 1.001, name

    with pytest.raises(CogniError, match="--dtype 'q5_k' is not supported for GGUF; choose one of f32, f16, bf16, "
                       "q8_0, q4_0"):
        export_gguf(source, tmp_path / "other.gguf", dtype="q5_k")


def test_llama_cpp_q8_0_greedy_tokens_agree_with_our_int8_weights(gguf_run: Path, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional check)")
    pytest.importorskip("torchao", reason="our int8 weights need torchao")
    from cognimamba.inference.weights import apply_weight_format

    run = load_run(gguf_run)
    ours = apply_weight_format(run.model, "int8")
    path = export_gguf(gguf_run, tmp_path / "model.gguf", dtype="q8_0")
    # No AMX buffers: llama.cpp's AMX q8_0 kernel dies of SIGILL on a KVM guest that reports AMX.
    low_level = llama_cpp.llama_cpp
    default = low_level.llama_model_default_params

    def without_extra_buffers():  # -> llama_model_params
        params = default()
        params.use_extra_bufts = False
        return params

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(low_level, "llama_model_default_params", without_extra_buffers)
        llm = llama_cpp.Llama(str(path), n_ctx=64, type_k=0, type_v=0, flash_attn=False, verbose=False, seed=0)
    try:
        agreeing, gaps = [], []
        for prompt in PROMPTS:
            ids = encode(run.tokenizer, prompt)
            expected = greedy_ids(ours, ids, 12)
            theirs = [token for _, token in zip(expected, llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0,
                                                                        reset=True), strict=False)]
            parted = next((i for i, (a, b) in enumerate(zip(expected, theirs, strict=False)) if a != b), None)
            agreeing.append(len(expected) if parted is None else parted)
            if parted is not None:
                with torch.no_grad():
                    logits = ours(torch.tensor([ids + expected[:parted]]))[0, -1]
                # how far below our choice llama.cpp's choice was, in units of the logits' spread
                gaps.append(float((logits[expected[parted]] - logits[theirs[parted]]) / logits.std()))
        # Both round the weights (per row here, per block of 32 there, which also rounds the activations to 8
        # bits), so where the two continuations part it must be at a near-tie of our own logits: within a third
        # of their standard deviation (our int8 parts from our fp32 within 0.05 on these prompts; a wrong
        # tensor layout misses by several), and one prompt at least agrees for all 12 tokens.
        assert all(gap < 0.3 for gap in gaps), (agreeing, gaps)
        assert any(first == 12 for first in agreeing), agreeing
    finally:
        llm.close()


def test_pre_tokenizer_names_what_llama_cpp_must_split_by() -> None:
    """Tokenizers trained now split digits one by one; older run dirs (GPT-2's split) still export; others refuse."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from cognimamba.model.tokenizer import new_tokenizer

    assert gguf_pre_tokenizer(new_tokenizer()) == "smollm"
    legacy = Tokenizer(models.BPE())
    legacy.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    assert gguf_pre_tokenizer(legacy) == "gpt-2"
    legacy.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(CogniError, match=r"tokenizer\.json: GGUF export needs"):
        gguf_pre_tokenizer(legacy)


def test_permuted_rows_with_interleaved_rope_give_the_same_attention_scores() -> None:
    """Why the permutation is right: llama.cpp's pairwise RoPE on permuted q/k == our rotate-half on the original."""
    heads, head_dim, dim, length = 3, 8, 12, 5
    torch.manual_seed(0)
    wq, wk, x = torch.randn(heads * head_dim, dim), torch.randn(heads * head_dim, dim), torch.randn(length, dim)
    cos, sin = rope_tables(head_dim, length, 10000.0)

    def ours(weight: torch.Tensor) -> torch.Tensor:
        return apply_rope((x @ weight.T).view(length, heads, head_dim).transpose(0, 1), cos, sin)

    def interleaved(weight: torch.Tensor) -> torch.Tensor:  # GGML_ROPE_TYPE_NORM: rotate (x0, x1), (x2, x3), ...
        y = (x @ weight.T).view(length, heads, head_dim // 2, 2).transpose(0, 1)
        # rope_tables' sin is negated on its first half; its second half is the plain sin.
        angle_cos, angle_sin = cos[:, : head_dim // 2].unsqueeze(-1), sin[:, head_dim // 2:].unsqueeze(-1)
        first, second = y[..., :1], y[..., 1:]
        rotated = torch.cat([first * angle_cos - second * angle_sin, first * angle_sin + second * angle_cos], -1)
        return rotated.reshape(heads, length, head_dim)

    expected = ours(wq) @ ours(wk).transpose(-1, -2)
    got = interleaved(permute_rope_rows(wq, heads)) @ interleaved(permute_rope_rows(wk, heads)).transpose(-1, -2)
    assert torch.allclose(expected, got, atol=1e-5)
    assert not torch.allclose(expected, interleaved(wq) @ interleaved(wk).transpose(-1, -2), atol=1e-3)
    assert torch.equal(unpermute_rope_rows(permute_rope_rows(wq, heads), heads), wq)


def test_llama_cpp_decodes_the_same_tokens(gguf_run: Path, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional check)")
    run = load_run(gguf_run)
    path = export_gguf(gguf_run, tmp_path / "model.gguf", dtype="f32")
    # An f32 KV cache (GGML type 0) so llama.cpp's numbers are comparable to ours at fp32 tolerance.
    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, type_k=0, type_v=0, flash_attn=False, verbose=False,
                          seed=0)
    try:
        for text in SPLIT_TEXTS:  # llama.cpp splits as our tokenizer.json does
            assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == encode(run.tokenizer, text), text
        stop = {run.tokenizer.token_to_id(END_OF_TEXT), run.tokenizer.token_to_id(IM_END)}
        for prompt in PROMPTS:
            ids = encode(run.tokenizer, prompt)
            llm.reset()
            llm.eval(ids)
            with torch.no_grad():
                ours = run.model(torch.tensor([ids]))[0].numpy()
            assert np.abs(np.array(llm.scores[: len(ids)]) - ours).max() < 1e-3
            expected = greedy_ids(run.model, ids, 20)
            decoded: list[int] = []
            for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
                if token in stop or len(decoded) == len(expected):
                    break
                decoded.append(token)
            assert len(decoded) > 3
            assert decoded == expected[: len(decoded)]
    finally:
        llm.close()


@pytest.mark.slow
def test_cli_gguf_export_and_errors(gguf_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    result = run_cli("export", str(gguf_run), "--format", "gguf", "--out", str(out), "--dtype", "f16")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and out.is_file()
    assert gguf.GGUFReader(out).fields["general.file_type"].contents() == 1

    for args, message in [(["--out", str(out)], "exists"), (["--out", str(tmp_path / "m.bin")], ".gguf"),
                          (["--out", str(tmp_path / "a.gguf"), "--adapter"], "always merged")]:
        result = run_cli("export", str(gguf_run), "--format", "gguf", *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    qk = make_run(tmp_path / "qk", "model.qk_norm=true")
    result = run_cli("export", str(qk), "--format", "gguf", "--out", str(tmp_path / "qk.gguf"))
    assert result.returncode == 2 and "qk_norm" in result.stderr
    assert not (tmp_path / "qk.gguf").exists()


GGUF_FAMILIES = {"qwen2": ["model.family=qwen2"], "qwen3": ["model.family=qwen3", "model.head_dim=32"],
                 "gemma3": ["model.family=gemma3", "model.n_layers=6", "model.sliding_window=8",
                            "model.attention_scale=16"]}


@pytest.mark.parametrize("family", list(GGUF_FAMILIES))
def test_each_family_is_written_as_llama_cpp_s_own_architecture(family: str, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", *GGUF_FAMILIES[family], seed=4)
    run = load_run(run_dir)
    reader = gguf.GGUFReader(export_gguf(run_dir, tmp_path / "model.gguf"))
    config = run.config.model
    assert field(reader, "general.architecture") == family
    assert field(reader, f"{family}.attention.key_length") == config.attention_head_dim
    assert field(reader, f"{family}.rope.freq_base") == pytest.approx(config.rope_theta)
    stored = {tensor.name: read_tensor(tensor) for tensor in reader.tensors}
    hf = to_hf_state_dict(model_state(run.model), config)
    # halves-rotating RoPE as ours: q and k go in unpermuted
    assert torch.equal(stored["blk.1.attn_q.weight"], hf["model.layers.1.self_attn.q_proj.weight"])
    if family == "gemma3":
        assert field(reader, "gemma3.attention.sliding_window") == 8
        assert torch.equal(stored["output_norm.weight"], hf["model.norm.weight"] + 1)  # llama.cpp scales by w


@pytest.mark.parametrize("family", list(GGUF_FAMILIES))
def test_llama_cpp_decodes_each_family_s_greedy_tokens(family: str, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (optional check)")
    run_dir = make_run(tmp_path / "run", *GGUF_FAMILIES[family], seed=4)
    run = load_run(run_dir)
    path = export_gguf(run_dir, tmp_path / "model.gguf", dtype="f32")
    llm = llama_cpp.Llama(str(path), n_ctx=64, type_k=0, type_v=0, flash_attn=False, verbose=False, seed=0)
    try:
        ids = encode(run.tokenizer, PROMPTS[0])
        expected = greedy_ids(run.model, ids, 16)
        decoded: list[int] = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if len(decoded) == len(expected):
                break
            decoded.append(token)
        assert decoded == expected
    finally:
        llm.close()
