"""The Mamba-2 mixer: the chunked scan is the recurrence, decoding from the state is the full pass, and hybrid
layer patterns build, count and validate like the all-attention model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from cognimamba.config.profiles import get_profile, mamba_layer_activation_bytes, parameter_counts
from cognimamba.config.schema import Config, ModelConfig, validate
from cognimamba.errors import CogniError
from cognimamba.inference.decoding import greedy_ids
from cognimamba.model.mamba2 import Mamba2, MambaState, segment_sums, ssd_scan
from cognimamba.model.transformer import DecodeCache, LanguageModel, MambaBlock, num_parameters


def tiny(pattern: str = "MA", **overrides) -> ModelConfig:
    settings = {"vocab_size": 97, "dim": 64, "n_layers": len(pattern), "n_heads": 4, "n_kv_heads": 2,
                "ffn_dim": 128, "max_seq_len": 64, "layer_pattern": pattern, "mamba_head_dim": 16,
                "mamba_state_size": 8, "mamba_chunk_size": 8}
    return ModelConfig(**{**settings, **overrides})


def model_for(config: ModelConfig) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(config).eval()


def sequential_recurrence(x, log_decay, b, c, initial_state=None):
    """The definition: h_t = exp(a_t) h_{t-1} + x_t b_t^T, y_t = h_t c_t, one token at a time."""
    batch, length, heads, head_dim = x.shape
    state = torch.zeros(batch, heads, head_dim, b.size(-1), dtype=x.dtype) if initial_state is None \
        else initial_state.clone()
    outputs = []
    for t in range(length):
        state = state * log_decay[:, t].exp()[:, :, None, None] + x[:, t, :, :, None] * b[:, t, None, None, :]
        outputs.append(torch.einsum("bhpn,bn->bhp", state, c[:, t]))
    return torch.stack(outputs, dim=1), state


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 16, 64])  # 64: every length in one chunk (one_chunk_scan)
@pytest.mark.parametrize("length", [1, 7, 16, 37])
def test_chunked_scan_equals_sequential_recurrence(chunk_size: int, length: int) -> None:
    generator = torch.Generator().manual_seed(length * 100 + chunk_size)
    batch, heads, head_dim, state_size = 2, 3, 4, 5
    x = torch.randn(batch, length, heads, head_dim, dtype=torch.float64, generator=generator)
    log_decay = -torch.rand(batch, length, heads, dtype=torch.float64, generator=generator) * 2
    b = torch.randn(batch, length, state_size, dtype=torch.float64, generator=generator)
    c = torch.randn(batch, length, state_size, dtype=torch.float64, generator=generator)
    initial = torch.randn(batch, heads, head_dim, state_size, dtype=torch.float64, generator=generator)
    for start_state in (None, initial):
        y, chunk_states = ssd_scan(x, log_decay, b, c, chunk_size, start_state)
        y_ref, final_ref = sequential_recurrence(x, log_decay, b, c, start_state)
        torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
        assert chunk_states.size(1) == -(-length // chunk_size)
        torch.testing.assert_close(chunk_states[:, -1], final_ref, atol=1e-10, rtol=1e-10)
        for index in range(chunk_states.size(1) - 1):  # the state after each whole chunk: prompt caching's checkpoints
            read = (index + 1) * chunk_size
            _, state_ref = sequential_recurrence(x[:, :read], log_decay[:, :read], b[:, :read], c[:, :read],
                                                 start_state)
            torch.testing.assert_close(chunk_states[:, index], state_ref, atol=1e-10, rtol=1e-10)


def test_segment_sums_are_decays_between_positions() -> None:
    x = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    sums = segment_sums(x)
    for i in range(4):
        for j in range(4):
            expected = x[j + 1:i + 1].sum() if j <= i else -torch.inf
            assert sums[i, j] == pytest.approx(float(expected))


def test_mixer_step_equals_chunked_forward() -> None:
    config = tiny("M")
    torch.manual_seed(0)
    mixer = Mamba2(config).eval()
    x = torch.randn(2, 21, config.dim)
    with torch.no_grad():
        full = mixer(x)
        state = MambaState.empty(config, 2, "cpu", torch.float32)
        pieces = [mixer(x[:, :5], state, 0)] + [mixer(x[:, i:i + 1], state, i) for i in range(5, 21)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_the_states_a_pass_lists_at_chunk_ends_resume_the_sequence_there() -> None:
    """Prompt caching's checkpoints: continuing from the states listed after 8 or 16 ids gives what the whole pass
    gave from there on."""
    config = tiny("M")  # chunks of 8
    torch.manual_seed(0)
    mixer = Mamba2(config).eval()
    x = torch.randn(2, 21, config.dim)
    with torch.no_grad():
        state = MambaState.empty(config, 2, "cpu", torch.float32)
        state.chunk_ends = []
        full = mixer(x, state, 0)
        assert [read for read, _, _ in state.chunk_ends] == [8, 16]
        for read, conv, ssm in state.chunk_ends:
            resumed = MambaState(conv.clone(), ssm.clone())
            torch.testing.assert_close(mixer(x[:, read:], resumed, read), full[:, read:], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(resumed.ssm, state.ssm, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern", ["MM", "MA", "AM"])
def test_cache_equals_full_forward(pattern: str) -> None:
    config = tiny(pattern)
    model = model_for(config)
    ids = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        full = model(ids)
        cache = DecodeCache(config, batch_size=2)
        pieces = [model(ids[:, :7], cache=cache, start=0)]  # prefill
        pieces.append(model(ids[:, 7:12], cache=cache, start=7))  # a chunk continuing the state
        pieces += [model(ids[:, i:i + 1], cache=cache, start=i) for i in range(12, 30)]  # token by token
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    # A new prompt at position 0 replaces the state: the same cache gives the same answer again.
    with torch.no_grad():
        again = model(ids[:, :7], cache=cache, start=0)
    torch.testing.assert_close(again, full[:, :7], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern", ["MM", "MA"])
def test_greedy_decoding_with_the_state_equals_rerunning_the_sequence(pattern: str) -> None:
    model = model_for(tiny(pattern, init_std=0.3))  # larger weights: a varied continuation, not one token
    prompt = [5, 17, 33, 2, 80]
    assert greedy_ids(model, prompt, 20) == greedy_ids(model, prompt, 20, use_cache=False)


def test_mamba_state_does_not_grow_with_context() -> None:
    short, long = DecodeCache(tiny("MM", max_seq_len=64), 1), DecodeCache(tiny("MM", max_seq_len=4096), 1)
    assert not short.keys and not long.keys
    assert all(short.mamba_states[layer].ssm.shape == long.mamba_states[layer].ssm.shape for layer in (0, 1))


def test_causality() -> None:
    model = model_for(tiny("MM"))
    ids = torch.randint(0, 97, (1, 20))
    changed = ids.clone()
    changed[0, 15] = (ids[0, 15] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["MM", "MA"])
def test_gradients_reach_every_parameter(pattern: str) -> None:
    model = model_for(tiny(pattern)).train()
    ids = torch.randint(0, 97, (2, 21))
    logits = model(ids[:, :-1])
    F.cross_entropy(logits.reshape(-1, 97), ids[:, 1:].reshape(-1)).backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    ids = torch.randint(0, 97, (2, 17))
    grads = []
    for checkpointing in (False, True):
        model = model_for(tiny("MA")).train()
        model.gradient_checkpointing = checkpointing
        F.cross_entropy(model(ids[:, :-1]).reshape(-1, 97), ids[:, 1:].reshape(-1)).backward()
        grads.append([p.grad for p in model.parameters()])
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(plain, checkpointed)


def test_empty_pattern_is_the_all_attention_model() -> None:
    """Same parameter names, same initial weights, and no Mamba state in the cache."""
    attention = model_for(tiny("", n_layers=2))
    spelled_out = model_for(tiny("AA"))
    assert list(attention.state_dict()) == list(spelled_out.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(attention.state_dict().values(), spelled_out.state_dict().values(),
                                                 strict=True))
    assert not DecodeCache(attention.config, 1).mamba_states
    hybrid = model_for(tiny("MA"))
    assert isinstance(hybrid.layers[0], MambaBlock)
    assert "layers.0.mamba.in_proj.weight" in hybrid.state_dict()
    assert "layers.1.attention.qkv.weight" in hybrid.state_dict()


def test_mamba_init_follows_the_reference() -> None:
    mixer = model_for(tiny("M", dim=128, mamba_head_dim=16)).layers[0].mamba
    assert torch.all(torch.exp(mixer.A_log) >= 1) and torch.all(torch.exp(mixer.A_log) <= 16)
    step = F.softplus(mixer.dt_bias)
    assert torch.all(step >= 1e-3 * 0.999) and torch.all(step <= 0.1 * 1.001)
    assert torch.all(mixer.D == 1)
    assert torch.all(mixer.norm.weight == 1)


@pytest.mark.parametrize("pattern", ["", "MMAMMA", "MMMMMM", "AAMAAA"])
def test_parameter_counts_match_the_model(pattern: str) -> None:
    config = replace(get_profile("cpu").model, n_layers=6, layer_pattern=pattern)
    with torch.device("meta"):
        model = LanguageModel(config)
    assert num_parameters(model) == parameter_counts(config)


def saved_bytes_per_token(module: torch.nn.Module, x: torch.Tensor, *args) -> float:
    """What autograd keeps for backward (parameters excluded), per token of x."""
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in parameters:
            saved[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x, *args)
    return sum(saved.values()) / (x.size(0) * x.size(1))


@pytest.mark.slow
@pytest.mark.parametrize("sizes", [{}, {"mamba_expand": 1}, {"mamba_chunk_size": 32}, {"mamba_state_size": 128},
                                   {"dim": 128, "mamba_head_dim": 32}])
def test_activation_estimate_covers_what_a_mamba_layer_saves(sizes: dict) -> None:
    config = ModelConfig(**{"dim": 256, "ffn_dim": 688, "n_layers": 1, "layer_pattern": "M", **sizes})
    block = MambaBlock(config, 0).train()
    x = torch.randn(2, 128, config.dim, requires_grad=True)
    rope = torch.ones(128, 1, config.attention_head_dim)
    measured = saved_bytes_per_token(block, x, rope, rope, None)
    estimated = mamba_layer_activation_bytes(config, act_bytes=4)
    assert measured <= estimated <= 1.25 * measured


def test_memory_estimate_follows_the_pattern() -> None:
    from cognimamba.config.profiles import estimate_memory

    attention = get_profile("cpu")
    hybrid = get_profile("cpu")
    hybrid.model.layer_pattern = "MMAMMA"
    assert estimate_memory(hybrid).activations > estimate_memory(attention).activations
    assert estimate_memory(hybrid).weights == parameter_counts(hybrid.model)[0] * 4


@pytest.mark.parametrize(("pattern", "expected"), [
    ("MMXMMA", "use only the letters A"),
    ("mmamma", "use only the letters A"),
    ("MMA", "has 3 letters but model.n_layers = 6"),
])
def test_bad_layer_patterns_are_one_line_errors(pattern: str, expected: str) -> None:
    config = Config()
    config.model.layer_pattern = pattern
    with pytest.raises(CogniError, match=expected) as error:
        validate(config)
    assert "\n" not in str(error.value) and "model.layer_pattern" in str(error.value)


def test_mamba_heads_must_tile_the_inner_width() -> None:
    config = Config()
    config.model.layer_pattern = "MMAMMA"
    config.model.mamba_head_dim = 48  # 2 * 256 = 512 is not a multiple of 48
    with pytest.raises(CogniError, match=r"model\.mamba_head_dim"):
        validate(config)
    config.model.layer_pattern = ""  # all attention: the Mamba sizes do not matter
    validate(config)
