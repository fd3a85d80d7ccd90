"""The AVX512-BF16 kernel for one row times a bf16 weight: the sums F.linear makes, and the tokens it decodes."""

from __future__ import annotations

import pytest
import torch

from cognimamba.config.schema import GenerationConfig
from cognimamba.inference.decoding import ChatModel
from cognimamba.model import bf16_matvec
from cognimamba.runs.loading import load_run

if not bf16_matvec.ready():  # compiles it (about half a minute, once per machine)
    pytest.skip(f"the bf16 kernel does not run here: {bf16_matvec._state['error']}", allow_module_level=True)


@pytest.mark.parametrize(("rows", "columns"), [(8, 32), (100, 64), (13, 96), (1152, 768)])
def test_one_row_is_the_fp32_sum_of_the_bf16_products(rows: int, columns: int):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(rows, columns, generator=generator).bfloat16()
    row = torch.randn(1, 1, columns, generator=generator).bfloat16()
    with torch.no_grad():
        assert bf16_matvec.applies(row, weight)
        got = bf16_matvec.bf16_matvec(weight, row)
    expected = (row.float() @ weight.float().t()).bfloat16()  # exact products, fp32 sums, rounded once
    assert got.shape == (1, 1, rows) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2 ** -7, atol=1e-3)


def test_it_takes_only_one_bf16_row_without_autograd():
    weight, row = torch.randn(16, 64).bfloat16(), torch.randn(1, 64).bfloat16()
    with torch.no_grad():
        assert bf16_matvec.applies(row, weight)
        assert not bf16_matvec.applies(row.expand(2, 64), weight)  # prefill: F.linear's GEMM
        assert not bf16_matvec.applies(row.float(), weight.float())
        assert not bf16_matvec.applies(row[:, :48], weight[:, :48].contiguous())  # not whole 32s
        assert not bf16_matvec.applies(row, weight.t().contiguous().t())  # not row-major
    assert not bf16_matvec.applies(row, weight)  # autograd on


def test_torch_compile_traces_through_it_in_one_graph():
    weight = torch.randn(40, 64).bfloat16()
    step = torch.compile(lambda row: bf16_matvec.bf16_matvec(weight, row) * 2, fullgraph=True, dynamic=True)
    row = torch.randn(1, 64).bfloat16()
    with torch.no_grad():
        assert torch.equal(step(row), bf16_matvec.bf16_matvec(weight, row) * 2)


def test_greedy_replies_are_the_same_with_the_kernel_and_torch_mv(tiny_run, monkeypatch):
    settings = GenerationConfig(temperature=0.0, max_new_tokens=24)
    with_kernel = ChatModel.from_run(load_run(tiny_run), weights="bf16")
    calls = []
    kernel = bf16_matvec._state["kernel"]
    monkeypatch.setitem(bf16_matvec._state, "kernel", type("Counted", (), {
        "matvec": staticmethod(lambda weight, row: calls.append(1) or kernel.matvec(weight, row))}))
    replied = "".join(with_kernel.stream("Once upon a time", settings))
    assert calls  # the bf16 weights' products went through it
    monkeypatch.setattr(bf16_matvec, "_state", {"error": "turned off for this test"})
    without = ChatModel.from_run(load_run(tiny_run), weights="bf16")
    assert "".join(without.stream("Once upon a time", settings)) == replied
