"""The fixed-point context model: passes reach the recurrence, convergence is reported as it is, and decoding
from the context cache is the full forward, token by token."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cognimamba.config.profiles import parameter_counts
from cognimamba.config.schema import ModelConfig
from cognimamba.model.build import build_model, new_cache
from cognimamba.model.fixed_point import EXACT_TOLERANCE, ContextLayer, Convergence, FixedPointModel
from cognimamba.model.transformer import num_parameters
from tests.float_bounds import EPS32, matmul_bound

VOCAB = 97
# silu's slope lies in [-0.1, 1.1]; tanh's in (0, 1]; the sigmoid's in (0, 1/4].
SILU_SLOPE, SIGMOID_SLOPE = 1.1, 0.25
# An elementwise function or a product rounds once or twice: a few units of eps of its value.
ELEMENTWISE_ROUNDING = 4 * EPS32


def seeded_ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def small_model(**settings: object) -> FixedPointModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, max_seq_len=64, arch="fixed_point", fixed_point_preset="small",
                         fixed_point_context_dim=32, fixed_point_hidden_dim=64, **settings)  # type: ignore[arg-type]
    model = build_model(config)
    assert isinstance(model, FixedPointModel)
    return model.eval()


def make_expanding(model: FixedPointModel) -> None:
    """Large weights and a gate that keeps nothing: a small change of context becomes a large one."""
    with torch.no_grad():
        for layer in model.updater.layers:
            layer.hidden.weight.mul_(200)
            layer.out.weight.mul_(50)
            layer.gate_bias.fill_(-6.0)


def layer_bound(layer: ContextLayer, context: torch.Tensor, token: torch.Tensor,
                context_error: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One gated update in float64, and how far a float32 evaluation from a context off by `context_error` can
    land from it: each matmul's summation-order bound plus the input's error through it, carried through silu,
    tanh and the gate by their largest slopes (elementwise, |.|)."""
    hidden_weight, out_weight = layer.hidden.weight.double(), layer.out.weight.double()
    inputs = torch.cat([context, token], dim=-1)
    input_error = torch.cat([context_error, torch.zeros_like(token)], dim=-1)
    hidden = inputs @ hidden_weight.T
    hidden_error = input_error @ hidden_weight.abs().T + matmul_bound(inputs, hidden_weight.T)
    activation = F.silu(hidden)
    activation_error = SILU_SLOPE * hidden_error + ELEMENTWISE_ROUNDING * activation.abs()
    mixed = activation @ out_weight.T
    mixed_error = activation_error @ out_weight.abs().T + matmul_bound(activation, out_weight.T)
    (candidate, gate), (candidate_error, gate_error) = mixed.chunk(2, dim=-1), mixed_error.chunk(2, dim=-1)
    keep, target = torch.sigmoid(gate + layer.gate_bias.double()), torch.tanh(candidate)
    target_error = (candidate_error + ELEMENTWISE_ROUNDING).clamp(max=2.0)  # both tanh values lie in [-1, 1]
    keep_error = (SIGMOID_SLOPE * gate_error + ELEMENTWISE_ROUNDING).clamp(max=1.0)
    updated = keep * context + (1 - keep) * target
    updated_error = (keep * context_error + (1 - keep) * target_error + keep_error * (context - target).abs()
                     + ELEMENTWISE_ROUNDING * (updated.abs() + 1))
    return updated, updated_error


def assert_each_context_is_one_step_on(model: FixedPointModel, ids: torch.Tensor, contexts: torch.Tensor) -> None:
    """c_t = F(c_{t-1}, x_t) at every t, to what float32 allows one step: the recurrence, checked step by step.

    A second float32 recurrence is no reference: a batched pass and a one-token step sum in orders that differ
    by kernel and host, and an expanding updater magnifies that one rounding step after step (a host once saw
    2.7e-5). Tokens the passes settled moved at most EXACT_TOLERANCE (RMS) in the last pass, so the context
    before them may be that far from the one their pass read.
    """
    tokens = model.token_inputs(ids).double()
    context = torch.cat([contexts.new_zeros(contexts[:, :1].shape), contexts[:, :-1]], dim=1).double()
    error = torch.full_like(context, math.sqrt(model.context_dim) * EXACT_TOLERANCE)
    for layer in model.updater.layers:
        context, error = layer_bound(layer, context, tokens, error)
    off = (contexts.double() - context).abs() > error
    assert not off.any(), f"{int(off.sum())} elements off; worst {float((contexts.double() - context).abs().max())}"


@torch.no_grad()
def test_passes_converge_to_the_recurrence_on_a_contractive_updater() -> None:
    model = small_model()
    ids = seeded_ids(3, 48)
    convergence = Convergence.start(ids.shape)
    contexts = model.solve(model.token_inputs(ids), None, convergence)
    assert convergence.rate == 1.0
    assert 2 <= convergence.mean_iterations < model.config.fixed_point_max_iterations
    assert_each_context_is_one_step_on(model, ids, contexts)


@torch.no_grad()
def test_an_expanding_updater_is_reported_unconverged_and_still_answered_exactly() -> None:
    model = small_model(fixed_point_max_iterations=4)
    make_expanding(model)
    ids = seeded_ids(3, 48)
    convergence = Convergence.start(ids.shape)
    contexts = model.solve(model.token_inputs(ids), None, convergence)
    assert convergence.rate < 0.5
    stuck = ~convergence.converged
    assert bool((convergence.iterations[stuck] == 4).all())  # a token that never settled took every pass
    # The passes ran out; inference finished the tokens by the recurrence, so its answer is still exact.
    assert_each_context_is_one_step_on(model, ids, contexts)


@pytest.mark.parametrize("expanding", [False, True])
@torch.no_grad()
def test_decoding_with_the_context_cache_equals_the_full_forward(expanding: bool) -> None:
    model = small_model(fixed_point_max_iterations=4)
    if expanding:
        make_expanding(model)
    ids = seeded_ids(2, 40)
    full = model(ids)
    cache = new_cache(model.config, 2, 40)
    steps = [model(ids[:, :17], cache=cache, start=0)]
    steps += [model(ids[:, position:position + 1], cache=cache, start=position) for position in range(17, 40)]
    # Not tight: both paths settle the first tokens in batched passes and take the rest one step at a time, so
    # only a kernel's summation order can part them, which the init-scale head (logits near 6e-3) shrinks; a
    # context misplaced by one token moves the logits by their own scale.
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="cannot continue at 5"):
        model(ids[:, 5:6], cache=cache, start=5)  # a context cannot be rewound


def test_teacher_passes_stop_once_every_token_settled_and_reach_every_context_parameter() -> None:
    model = small_model().train()
    ids = seeded_ids(2, 32)
    passes = []
    for teacher in model.teacher_passes(ids):
        teacher.loss.backward()
        passes.append(teacher)
    assert passes[0].pass_index == 2
    assert float(passes[-1].change.max()) < model.config.fixed_point_threshold
    assert len(passes) < model.config.fixed_point_max_iterations - 1
    assert all(p.grad is not None and p.grad.any() for p in model.context_parameters())
    assert all(p.grad is None for p in model.head.parameters())  # phase 1 leaves the head alone


def test_the_full_forward_reaches_every_parameter() -> None:
    model = small_model().train()
    ids = seeded_ids(2, 17)
    logits = model(ids[:, :-1])
    torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).backward()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("preset", ["small", "medium", "large"])
def test_presets_and_the_parameter_count_from_shapes(preset: str) -> None:
    config = ModelConfig(vocab_size=VOCAB, arch="fixed_point", fixed_point_preset=preset)
    with torch.device("meta"):
        model = build_model(config)
    assert num_parameters(model) == parameter_counts(config)
    layers, context_dim, hidden_dim = config.fixed_point_shape
    assert (len(model.updater.layers), model.context_dim, model.updater.layers[0].hidden.out_features) == (
        layers, context_dim, hidden_dim)
    assert ModelConfig(arch="fixed_point", fixed_point_preset=preset, fixed_point_context_dim=48).fixed_point_shape \
        == (layers, 48, hidden_dim)
