"""The fixed-point context model: passes reach the recurrence, convergence is reported as it is, and decoding
from the context cache is the full forward, token by token."""

from __future__ import annotations

import pytest
import torch

from cognimamba.config.profiles import parameter_counts
from cognimamba.config.schema import ModelConfig
from cognimamba.model.build import build_model, new_cache
from cognimamba.model.fixed_point import Convergence, FixedPointModel
from cognimamba.model.transformer import num_parameters

VOCAB = 97


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


def recurrence(model: FixedPointModel, ids: torch.Tensor) -> torch.Tensor:
    """c_t = F(c_{t-1}, x_t) one token at a time: what the fixed point must equal."""
    tokens = model.token_inputs(ids)
    context = tokens.new_zeros(ids.size(0), model.context_dim)
    contexts = []
    for position in range(ids.size(1)):
        context = model.updater(context, tokens[:, position])
        contexts.append(context)
    return torch.stack(contexts, dim=1)


@torch.no_grad()
def test_passes_converge_to_the_recurrence_on_a_contractive_updater() -> None:
    model = small_model()
    ids = torch.randint(0, VOCAB, (3, 48))
    convergence = Convergence.start(ids.shape)
    contexts = model.solve(model.token_inputs(ids), None, convergence)
    assert convergence.rate == 1.0
    assert 2 <= convergence.mean_iterations < model.config.fixed_point_max_iterations
    torch.testing.assert_close(contexts, recurrence(model, ids), atol=1e-5, rtol=0)


@torch.no_grad()
def test_an_expanding_updater_is_reported_unconverged_and_still_answered_exactly() -> None:
    model = small_model(fixed_point_max_iterations=4)
    make_expanding(model)
    ids = torch.randint(0, VOCAB, (3, 48))
    convergence = Convergence.start(ids.shape)
    contexts = model.solve(model.token_inputs(ids), None, convergence)
    assert convergence.rate < 0.5
    stuck = ~convergence.converged
    assert bool((convergence.iterations[stuck] == 4).all())  # a token that never settled took every pass
    # The passes ran out; inference finished the tokens by the recurrence, so its answer is still exact.
    torch.testing.assert_close(contexts, recurrence(model, ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("expanding", [False, True])
@torch.no_grad()
def test_decoding_with_the_context_cache_equals_the_full_forward(expanding: bool) -> None:
    model = small_model(fixed_point_max_iterations=4)
    if expanding:
        make_expanding(model)
    ids = torch.randint(0, VOCAB, (2, 40))
    full = model(ids)
    cache = new_cache(model.config, 2, 40)
    steps = [model(ids[:, :17], cache=cache, start=0)]
    steps += [model(ids[:, position:position + 1], cache=cache, start=position) for position in range(17, 40)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="cannot continue at 5"):
        model(ids[:, 5:6], cache=cache, start=5)  # a context cannot be rewound


def test_teacher_passes_stop_once_every_token_settled_and_reach_every_context_parameter() -> None:
    model = small_model().train()
    ids = torch.randint(0, VOCAB, (2, 32))
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
    ids = torch.randint(0, VOCAB, (2, 17))
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
