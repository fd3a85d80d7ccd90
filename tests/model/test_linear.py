"""cpu_linear.Linear: the same layer as nn.Linear (values, gradients, state dict), only a faster matmul."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cognimamba.model import cpu_matmul
from cognimamba.model import linear as cpu_linear
from cognimamba.model.linear import Linear, use_onednn
from tests.float_bounds import assert_within, matmul_bound

# Our kernels and nn.Linear's compute the same products and differ only in the order they sum them, so each
# comparison allows that order's bound (tests/float_bounds.py) rather than a tolerance seen on one host.


@pytest.fixture(autouse=True)
def onednn_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test the oneDNN path wherever the wheel has it, also on Intel processors where it is off by default."""
    monkeypatch.setattr(cpu_linear, "ENABLED", cpu_linear.AVAILABLE)


@pytest.fixture
def avx512_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN's whole domain: a host where MKL's AVX2 is not as wide as oneDNN (not an AMD CPU without AVX-512)."""
    monkeypatch.setattr(cpu_matmul, "AVX2_ONLY_AMD", False)


def pair(in_features: int, out_features: int) -> tuple[Linear, nn.Linear]:
    torch.manual_seed(0)
    ours = Linear(in_features, out_features, bias=False)
    reference = nn.Linear(in_features, out_features, bias=False)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


@pytest.mark.parametrize("shape", [(4, 40, 48), (16, 48), (3, 48), (1, 1, 48)])
def test_values_and_gradients_match_nn_linear(shape: tuple[int, ...], avx512_host: None) -> None:
    ours, reference = pair(48, 80)
    x = torch.randn(*shape, requires_grad=True)
    x_reference = x.detach().clone().requires_grad_()
    grad = torch.randn(*shape[:-1], 80)
    ours(x).backward(grad)
    reference(x_reference).backward(grad)
    weight, rows, grad_rows = ours.weight.detach(), x.detach().reshape(-1, 48), grad.reshape(-1, 80)
    assert_within(ours(x), reference(x_reference), matmul_bound(x.detach(), weight.T))
    assert_within(x.grad, x_reference.grad, matmul_bound(grad, weight))
    assert_within(ours.weight.grad, reference.weight.grad, matmul_bound(grad_rows.T, rows))


def test_takes_onednn_only_where_it_pays(avx512_host: None) -> None:
    weight = torch.randn(80, 48)
    many_rows, one_row = torch.randn(2, 8, 48), torch.randn(1, 1, 48)
    assert use_onednn(many_rows, weight) == cpu_linear.AVAILABLE  # training
    assert not use_onednn(one_row, weight)  # a decoded token: MKL's lower per-call cost wins
    with torch.no_grad():  # a small weight's few rows stay on MKL; a large weight's, and a long prompt, take oneDNN
        large = torch.randn(cpu_linear.MKL_PROMPT_ELEMENTS // 48 + 1, 48)
        long_prompt = torch.randn(1, cpu_linear.SMALL_WEIGHT_ONEDNN_ROWS, 48)
        assert not use_onednn(many_rows, weight)
        assert use_onednn(many_rows, large) == use_onednn(long_prompt, weight) == cpu_linear.AVAILABLE
    assert not use_onednn(many_rows.double(), weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not use_onednn(many_rows, weight)


def test_an_amd_cpu_without_avx512_keeps_mkl_but_for_a_large_weights_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_matmul, "AVX2_ONLY_AMD", True)
    many_rows, weight = torch.randn(2, 8, 48), torch.randn(80, 48)
    large = torch.randn(cpu_linear.MKL_PROMPT_ELEMENTS // 48 + 1, 48)
    assert not use_onednn(many_rows, weight) and not use_onednn(many_rows, large)  # training
    with torch.no_grad():
        assert not use_onednn(many_rows, weight)
        assert not use_onednn(torch.randn(1, cpu_linear.SMALL_WEIGHT_ONEDNN_ROWS, 48), weight)
        assert use_onednn(many_rows, large) == cpu_linear.AVAILABLE


def test_frozen_weight_and_non_contiguous_gradients(avx512_host: None) -> None:
    ours, reference = pair(32, 24)
    ours.weight.requires_grad_(False)
    x = torch.randn(5, 12, 32, requires_grad=True)
    ours(x).transpose(0, 1).sum().backward()  # the incoming gradient is a transposed view
    x_reference = x.detach().clone().requires_grad_()
    reference(x_reference).sum().backward()
    assert_within(x.grad, x_reference.grad, matmul_bound(torch.ones(5, 12, 24), ours.weight))
    assert ours.weight.grad is None
    assert list(ours.state_dict()) == ["weight"]


@pytest.fixture
def one_row_on_mkl(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoding copy's host: one fp32 row on MKL, not the kernel (which takes it on AMD CPUs)."""
    monkeypatch.setattr(cpu_matmul, "FP32_ROWS", (4, 8))
    monkeypatch.setattr(cpu_matmul, "FP32_MIN_ELEMENTS", 1 << 19)


def test_decoding_copy_gives_nn_linear_values_and_follows_weight_updates(one_row_on_mkl) -> None:
    ours, reference = pair(48, 80)
    row = torch.randn(1, 1, 48)
    with torch.inference_mode():
        assert_within(ours(row), reference(row), matmul_bound(row, ours.weight.detach().T))
    assert ours._transposed is not None and ours._transposed.shape == (48, 80)
    with torch.no_grad():  # a training step or load_state_dict changes the weight in place
        ours.weight.mul_(-2.0)
        reference.weight.mul_(-2.0)
        assert_within(ours(row), reference(row), matmul_bound(row, ours.weight.detach().T))
    ours.weight = nn.Parameter(torch.randn(80, 48))  # a new tensor altogether
    reference.weight = nn.Parameter(ours.weight.detach().clone())
    with torch.no_grad():
        assert_within(ours(row), reference(row), matmul_bound(row, ours.weight.detach().T))


def test_decoding_copy_only_for_wide_layers_without_autograd(one_row_on_mkl) -> None:
    narrow, _ = pair(80, 48)
    wide, _ = pair(48, 80)
    with torch.no_grad():
        narrow(torch.randn(1, 80))
    wide(torch.randn(1, 48))  # autograd on: training never makes or uses the copy
    assert narrow._transposed is None and wide._transposed is None
    cpu_linear.refresh_transposed(nn.Sequential(narrow, wide))
    assert narrow._transposed is None and wide._transposed is not None


def test_decoding_copies_can_be_turned_off(monkeypatch, one_row_on_mkl) -> None:
    monkeypatch.setattr(cpu_linear, "DECODE_COPIES", False)
    ours, reference = pair(48, 80)
    row = torch.randn(1, 48)
    with torch.no_grad():
        assert_within(ours(row), reference(row), matmul_bound(row, ours.weight.detach().T))
    cpu_linear.refresh_transposed(ours)
    assert ours._transposed is None


def test_onednn_by_default_only_where_mkl_is_slow() -> None:
    from cognimamba.model.linear import mkl_takes_generic_path, onednn_enabled

    assert onednn_enabled(None, available=True, generic_mkl=True)  # AMD: MKL's generic path is slow
    assert not onednn_enabled(None, available=True, generic_mkl=False)  # Intel: MKL is as fast or faster
    assert onednn_enabled("1", available=True, generic_mkl=False)
    assert not onednn_enabled("0", available=True, generic_mkl=True)
    assert not onednn_enabled("1", available=False, generic_mkl=True)  # no kernel in this wheel: never
    assert isinstance(mkl_takes_generic_path(), bool)
