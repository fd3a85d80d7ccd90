"""The CPU decoding kernel for a few rows times a weight: the sums F.linear makes, and the tokens it decodes."""

from __future__ import annotations

import os
import time

import pytest
import torch

from cognimamba.config.schema import GenerationConfig
from cognimamba.inference import weights as weight_formats
from cognimamba.inference.batching import BatchEngine, generate_all
from cognimamba.inference.decoding import ChatModel, Decoder
from cognimamba.model import cpu_matmul
from cognimamba.runs.loading import load_run

if not cpu_matmul.ready():  # compiles it (about half a minute, once per machine)
    pytest.skip(f"the CPU decoding kernel does not run here: {cpu_matmul._state['error']}", allow_module_level=True)
needs_bf16 = pytest.mark.skipif(not cpu_matmul._state["bf16"], reason="no AVX512-BF16 on this CPU")
needs_fp32 = pytest.mark.skipif(not cpu_matmul.FP32_ON, reason="fp32 stays on MKL here (AVX2 alone, an Intel CPU)")


@needs_bf16
@pytest.mark.parametrize(("rows", "columns", "inputs"), [(8, 32, 1), (100, 64, 1), (13, 96, 2), (1152, 768, 1),
                                                         (1152, 768, 2), (37, 64, 2), (24, 688, 1), (9, 47, 2),
                                                         (16, 5, 1)])
def test_bf16_rows_are_the_fp32_sums_of_the_bf16_products(rows: int, columns: int, inputs: int):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(rows, columns, generator=generator).bfloat16()
    x = torch.randn(inputs, 1, columns, generator=generator).bfloat16()
    with torch.no_grad():
        assert cpu_matmul.applies(x, weight)
        got = cpu_matmul.few_rows(weight, x)
    expected = (x.float() @ weight.float().t()).bfloat16()  # exact products, fp32 sums, rounded once
    assert got.shape == (inputs, 1, rows) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2 ** -7, atol=1e-3)


@needs_fp32
@pytest.mark.parametrize(("rows", "columns", "inputs"), [(8, 16, 4), (100, 77, 5), (13, 96, 8), (2048, 768, 8),
                                                         (768, 2048, 7)])
def test_fp32_rows_equal_f_linear(rows: int, columns: int, inputs: int, monkeypatch):
    monkeypatch.setattr(cpu_matmul, "FP32_MIN_ELEMENTS", 0)  # these are smaller than those it takes in a model
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(rows, columns, generator=generator)
    x = torch.randn(inputs, columns, generator=generator)
    with torch.no_grad():
        if not cpu_matmul.AVX512 and columns % 8:
            assert not cpu_matmul.applies(x, weight)  # AVX2 reads whole 8s of a row
            return
        assert cpu_matmul.applies(x, weight)
        got = cpu_matmul.few_rows(weight, x)
    assert got.shape == (inputs, rows) and got.dtype == torch.float32
    torch.testing.assert_close(got, x.double().matmul(weight.double().t()).float(), rtol=1e-5, atol=1e-4)


@needs_fp32
def test_it_takes_only_a_decoding_steps_rows_without_autograd(monkeypatch):
    weight, row = torch.randn(16, 64), torch.randn(1, 64)
    fewest, most = cpu_matmul.FP32_ROWS  # 4-8 with AVX-512, 1-16 with AVX2 on AMD (see cpu_matmul)
    with torch.no_grad():
        assert cpu_matmul.applies(torch.randn(4, 768), torch.randn(768, 768))
        if weight.numel() < cpu_matmul.FP32_MIN_ELEMENTS:
            assert not cpu_matmul.applies(row.expand(4, 64), weight)  # fp32 weights this small: MKL is faster
            assert not cpu_matmul.may_apply(weight)  # so compiling a small fp32 model does not build the kernel
    assert cpu_matmul.may_apply(torch.randn(768, 768))
    monkeypatch.setattr(cpu_matmul, "FP32_MIN_ELEMENTS", 0)
    with torch.no_grad():
        assert cpu_matmul.applies(row.expand(fewest, 64), weight)
        assert cpu_matmul.applies(row.expand(most, 64), weight)
        if fewest > 1:
            assert not cpu_matmul.applies(row, weight)  # one fp32 row: MKL through the decoding copy
        assert not cpu_matmul.applies(row.expand(most + 1, 64), weight)  # more rows, a prompt: the GEMM
        assert not cpu_matmul.applies(row.expand(4, 64), weight.t().contiguous().t())  # not row-major
        assert not cpu_matmul.applies(row.expand(4, 64).bfloat16(), weight)  # dtypes differ
        if cpu_matmul._state["bf16"]:
            assert cpu_matmul.may_apply(weight.bfloat16())
            assert cpu_matmul.applies(row.bfloat16(), weight.bfloat16())
            assert not cpu_matmul.applies(row.expand(3, 64).bfloat16(), weight.bfloat16())  # oneDNN, packed
            assert cpu_matmul.applies(row[:, :48].bfloat16(), weight[:, :48].bfloat16().contiguous())  # any width
    assert not cpu_matmul.applies(row.expand(4, 64), weight)  # autograd on


@needs_fp32
def test_torch_compile_traces_through_it_in_one_graph():
    weight = torch.randn(40, 64)
    step = torch.compile(lambda x: cpu_matmul.few_rows(weight, x) * 2, fullgraph=True, dynamic=True)
    x = torch.randn(6, 64)
    with torch.no_grad():
        assert torch.equal(step(x), cpu_matmul.few_rows(weight, x) * 2)


def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the kernel's calls from here on."""
    calls: list[int] = []
    kernel = cpu_matmul.few_rows
    monkeypatch.setattr(cpu_matmul, "few_rows", lambda weight, x: calls.append(1) or kernel(weight, x))
    return calls


@needs_bf16
def test_greedy_replies_are_the_same_with_the_kernel_and_torch_mv(tiny_run, monkeypatch):
    settings = GenerationConfig(temperature=0.0, max_new_tokens=24)
    with_kernel = ChatModel.from_run(load_run(tiny_run), weights="bf16")
    calls = counted(monkeypatch)
    replied = "".join(with_kernel.stream("Once upon a time", settings))
    assert calls  # the bf16 weights' products went through it
    monkeypatch.setattr(cpu_matmul, "_state", {"error": "turned off for this test"})
    without = ChatModel.from_run(load_run(tiny_run), weights="bf16")
    assert "".join(without.stream("Once upon a time", settings)) == replied


@needs_fp32
def test_eight_fp32_slots_decode_the_text_each_prompt_decodes_alone(tiny_run, monkeypatch):
    monkeypatch.setattr(cpu_matmul, "FP32_MIN_ELEMENTS", 0)  # the tiny run's weights are smaller than those it takes
    loaded = load_run(tiny_run)
    texts = ["Once upon a time", "The cat", "Lily and Tom went", "One day, a little", "The sun was", "Mom said",
             "A big dog", "They played"]
    prompts = [loaded.tokenizer.encode(text).ids for text in texts]
    settings = GenerationConfig(temperature=0.0, max_new_tokens=20)
    decoder = Decoder(loaded.model, loaded.tokenizer)
    alone = [decoder.generate(prompt, settings) for prompt in prompts]  # one row: the decoding copy, or the kernel
    calls = counted(monkeypatch)
    together = generate_all(BatchEngine(loaded.model, loaded.tokenizer, slots=8), prompts, settings)
    assert calls  # the steps of four or more slots went through the kernel
    assert [text for text, _ in together] == alone


@needs_bf16
@pytest.mark.parametrize("inputs", [3, 8, 76])
def test_bf16_weights_packed_for_onednn_give_f_linears_products(inputs: int):
    generator = torch.Generator().manual_seed(inputs)
    weight = torch.randn(200, 96, generator=generator).bfloat16()
    x = torch.randn(inputs, 96, generator=generator).bfloat16()
    packed = cpu_matmul.pack_bf16(weight)
    with torch.no_grad():
        got = cpu_matmul.packed_bf16(packed, x)
        compiled = torch.compile(lambda rows: cpu_matmul.packed_bf16(packed, rows) * 2, fullgraph=True)(x)
    expected = (x.float() @ weight.float().t()).bfloat16()
    torch.testing.assert_close(got.float(), expected.float(), rtol=2 ** -7, atol=1e-3)
    assert torch.equal(compiled, got * 2)


@needs_bf16
def test_eight_bf16_slots_decode_the_text_each_prompt_decodes_alone(tiny_run, monkeypatch):
    loaded = load_run(tiny_run)
    chat = ChatModel.from_run(loaded, weights="bf16")
    texts = ["Once upon a time", "The cat", "Lily and Tom went", "One day, a little", "The sun was", "Mom said",
             "A big dog", "They played"]
    prompts = [loaded.tokenizer.encode(text).ids for text in texts]
    settings = GenerationConfig(temperature=0.0, max_new_tokens=20)
    model = chat.decoder.model
    alone = [chat.decoder.generate(prompt, settings) for prompt in prompts]  # one row: the AVX512-BF16 kernel
    packed_calls: list[int] = []
    packed = cpu_matmul.packed_bf16
    monkeypatch.setattr(cpu_matmul, "packed_bf16", lambda *args: packed_calls.append(1) or packed(*args))
    together = generate_all(BatchEngine(model, loaded.tokenizer, slots=8), prompts, settings)
    assert packed_calls  # prompts and steps of three or more slots: oneDNN on the packed weights
    assert [text for text, _ in together] == alone


def test_q8_rounding_gives_each_block_of_32_its_own_scale_and_rounds_to_nearest_even():
    row = torch.zeros(48)
    row[0], row[1], row[2], row[3] = 127.0, 2.5, -3.5, 0.4  # one block with scale 1 (127 / 127)
    row[32], row[33] = 0.5, 0.125  # the last block (16 values): scale 0.5 / 127
    rounded = cpu_matmul.q8_rounded(row)
    assert rounded[:5].tolist() == [127.0, 2.0, -4.0, 0.0, 0.0]  # 2.5 to 2 and -3.5 to -4: nearest even
    torch.testing.assert_close(rounded[32:34], torch.tensor([0.5, round(0.125 * 254) / 254]))
    assert torch.equal(cpu_matmul.q8_rounded(torch.zeros(3, 64)), torch.zeros(3, 64))


@pytest.mark.parametrize("columns", [48, 40, 688, 2048])
def test_q8_rounding_of_the_kernel_library_is_pytorchs(columns: int, monkeypatch):
    x = torch.randn(2, 17, columns, generator=torch.Generator().manual_seed(columns))
    x[0, 0, :5] = 0.0  # and a block that is partly zeros
    x[1, 3, :] = 0.0  # and a row of zeros
    in_one_pass = cpu_matmul.q8_rounded(x)
    monkeypatch.setattr(cpu_matmul, "_state", {"error": "turned off for this test"})
    assert torch.equal(in_one_pass, cpu_matmul.q8_rounded(x))


@pytest.mark.parametrize(("rows", "columns", "inputs"), [(8, 16, 1), (100, 48, 2), (13, 96, 3), (2048, 768, 1),
                                                         (768, 2048, 8), (37, 688, 16)])
def test_int8_rows_are_the_q8_products_of_the_rows_quantized_in_blocks_of_32(rows: int, columns: int, inputs: int):
    generator = torch.Generator().manual_seed(rows)
    qweight = torch.randint(-127, 128, (rows, columns), generator=generator, dtype=torch.int8)
    qweight[0, :16] = -127
    scale = torch.rand(rows, generator=generator) / 100
    x = torch.randn(inputs, 1, columns, generator=generator)
    x[..., :8] *= 50  # an outlier block: its own scale, the other blocks keep theirs
    with torch.no_grad():
        assert cpu_matmul.applies_int8(x, qweight)
        got = cpu_matmul.few_rows_int8(qweight, scale, x)
        one_by_one = torch.stack([cpu_matmul.few_rows_int8(qweight, scale, row) for row in x])
    # Each block's integer products are exact; only the fp32 scaling and summing of the blocks round.
    products = cpu_matmul.q8_rounded(x).double() @ (qweight.double() * scale.double()[:, None]).t()
    expected = products.float()
    assert got.shape == (inputs, 1, rows) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert torch.equal(got, one_by_one)  # a row's sums do not depend on the rows beside it (slots, alone)
    dequantized = x.double() @ (qweight.double() * scale.double()[:, None]).t()
    torch.testing.assert_close(got.double(), dequantized, rtol=0.02, atol=0.02 * dequantized.abs().max().item())


def test_int8_takes_a_decoding_steps_fp32_rows_of_whole_16s_without_autograd():
    qweight, row = torch.randint(-127, 128, (24, 64), dtype=torch.int8), torch.randn(1, 64)
    assert cpu_matmul.may_apply(qweight)
    with torch.no_grad():
        assert cpu_matmul.applies_int8(row, qweight) and cpu_matmul.applies_int8(row.expand(16, 64), qweight)
        # A prompt: the dequantized weight's GEMM, except where MKL runs its generic path (AMD).
        assert cpu_matmul.applies_int8(row.expand(17, 64), qweight) == cpu_matmul.FP32_EVERY_ROW
        assert not cpu_matmul.applies_int8(row.bfloat16(), qweight)
        assert not cpu_matmul.applies_int8(row[:, :40], qweight[:, :40].contiguous())  # 16s
    assert not cpu_matmul.applies_int8(row, qweight)  # autograd on


def test_torch_compile_traces_through_the_int8_kernel_in_one_graph():
    qweight, scale = torch.randint(-127, 128, (40, 64), dtype=torch.int8), torch.rand(40)
    step = torch.compile(lambda x: cpu_matmul.few_rows_int8(qweight, scale, x) * 2, fullgraph=True, dynamic=True)
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(step(x), cpu_matmul.few_rows_int8(qweight, scale, x) * 2)


REPLY_TEXTS = ["Once upon a time", "The cat", "Lily and Tom went", "One day, a little", "The sun was", "Mom said",
               "A big dog", "They played"]
REPLY_SETTINGS = GenerationConfig(temperature=0.0, max_new_tokens=20)


def replies_alone_and_in_eight_slots(tiny_run, weights: str, kernel_name: str, monkeypatch
                                     ) -> tuple[ChatModel, list[list[int]], list[str]]:
    """The run in `weights`, its greedy replies to REPLY_TEXTS alone and in eight slots (checked equal, and
    checked to have called cpu_matmul's `kernel_name`): the model, the prompts and the replies alone."""
    loaded = load_run(tiny_run)
    prompts = [loaded.tokenizer.encode(text).ids for text in REPLY_TEXTS]
    chat = ChatModel.from_run(loaded, weights=weights)
    calls: list[int] = []
    kernel = getattr(cpu_matmul, kernel_name)
    monkeypatch.setattr(cpu_matmul, kernel_name, lambda *args: calls.append(1) or kernel(*args))
    alone = [chat.decoder.generate(prompt, REPLY_SETTINGS) for prompt in prompts]
    together = generate_all(BatchEngine(chat.decoder.model, loaded.tokenizer, slots=8), prompts, REPLY_SETTINGS)
    assert calls and [text for text, _ in together] == alone
    return chat, prompts, alone


def test_int8_replies_alone_and_in_eight_slots_agree_and_prompts_round_their_rows_as_the_kernel(tiny_run, monkeypatch):
    pytest.importorskip("torchao", reason="int8 weights need torchao (the cpu-int8 extra)")
    chat, prompts, _ = replies_alone_and_in_eight_slots(tiny_run, "int8", "few_rows_int8", monkeypatch)
    model, ids = chat.decoder.model, torch.tensor([prompts[0] * 4])[:, :16]  # 16 rows: every product on the kernel
    with torch.no_grad():
        on_the_kernel = model(ids)
        monkeypatch.setattr(cpu_matmul, "_state", {"error": "turned off for this test"})
        for layer in model.modules():  # and PyTorch's bf16-row int8 kernel off: a prompt's products throughout
            if hasattr(layer, "single_row_kernel"):
                layer.single_row_kernel = False
        as_a_prompt = model(ids)
        monkeypatch.setattr(cpu_matmul, "q8_rounded", lambda x: x)
        fp32_rows = model(ids)
    spread = fp32_rows.std().item()
    torch.testing.assert_close(on_the_kernel, as_a_prompt, rtol=0, atol=1e-4 * spread)  # only the sums' order
    # The rows' int8 rounding (q8_0's) moves logits by about a percent of their spread, not more.
    assert not torch.equal(on_the_kernel, fp32_rows)
    torch.testing.assert_close(on_the_kernel, fp32_rows, rtol=0, atol=0.03 * spread)


@pytest.mark.parametrize(("rows", "columns", "inputs"), [(8, 8, 1), (100, 48, 2), (13, 96, 3), (2048, 768, 1),
                                                         (768, 2048, 8), (37, 688, 16)])
def test_bf16_weights_times_fp32_rows_are_the_fp32_sums_of_the_widened_weights(rows: int, columns: int, inputs: int):
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(rows, columns, generator=generator).bfloat16()
    x = torch.randn(inputs, 1, columns, generator=generator)
    with torch.no_grad():
        assert cpu_matmul.applies_bf16_weight(x, weight)
        got = cpu_matmul.few_rows_bf16_weight(weight, x)
    expected = x.double() @ weight.double().t()  # bf16 to fp64 is exact: only the order of the fp32 sums differs
    assert got.shape == (inputs, 1, rows) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-4)


def test_bf16_weights_take_a_decoding_steps_fp32_rows_of_whole_8s_without_autograd():
    weight, row = torch.randn(24, 64).bfloat16(), torch.randn(1, 64)
    with torch.no_grad():
        assert cpu_matmul.applies_bf16_weight(row, weight)
        assert cpu_matmul.applies_bf16_weight(row.expand(16, 64), weight)
        assert not cpu_matmul.applies_bf16_weight(row.expand(17, 64), weight)  # a prompt: the widened weight's GEMM
        assert not cpu_matmul.applies_bf16_weight(row.bfloat16(), weight)
        assert not cpu_matmul.applies_bf16_weight(row[:, :60], weight[:, :60].contiguous())  # 8s
        assert not cpu_matmul.applies_bf16_weight(row, weight.t().contiguous().t())  # not contiguous
    assert not cpu_matmul.applies_bf16_weight(row, weight)  # autograd on


def test_torch_compile_traces_through_the_bf16_weight_kernel_in_one_graph():
    weight = torch.randn(40, 64).bfloat16()
    step = torch.compile(lambda x: cpu_matmul.few_rows_bf16_weight(weight, x) * 2, fullgraph=True, dynamic=True)
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(step(x), cpu_matmul.few_rows_bf16_weight(weight, x) * 2)


def test_bf16_weight_replies_alone_and_in_eight_slots_are_the_widened_weights_replies(tiny_run, monkeypatch):
    monkeypatch.setattr(weight_formats, "cpu_has_native_bf16", lambda: False)  # the weight-only form on any host
    chat, prompts, alone = replies_alone_and_in_eight_slots(tiny_run, "bf16", "few_rows_bf16_weight", monkeypatch)
    monkeypatch.setattr(cpu_matmul, "_state", {"error": "turned off for this test"})  # widened to fp32 throughout
    assert [chat.decoder.generate(prompt, REPLY_SETTINGS) for prompt in prompts] == alone


def test_a_lock_left_by_an_interrupted_build_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "some_build" / "lock"
    lock.parent.mkdir()
    lock.touch()
    cpu_matmul.clear_stale_lock("some_build")
    assert lock.exists()  # a build may be running now
    stale = time.time() - cpu_matmul.STALE_LOCK_SECONDS - 60
    os.utime(lock, (stale, stale))
    cpu_matmul.clear_stale_lock("some_build")
    assert not lock.exists()  # else torch's builder would wait for it forever
