"""cogni bench: option parsing, the combinations it runs and the shape of what it reports (no timing asserts)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cognimamba.errors import CogniError
from cognimamba.evaluation.bench import (
    BenchOptions,
    inference_dtype,
    load_bench_model,
    measure_decode,
    parse_int_list,
    run_bench,
    total_runs,
)
from tests.conftest import run_cli

CPU = torch.device("cpu")


def test_list_options_read_like_llama_bench() -> None:
    assert parse_int_list(["128,256", "512"], "-p", [512]) == [128, 256, 512]
    assert parse_int_list(None, "-p", [512]) == [512]
    assert parse_int_list(["64", "64,0"], "-n", [128]) == [64, 0]
    with pytest.raises(CogniError, match="-p 'abc'"):
        parse_int_list(["abc"], "-p", [512])
    with pytest.raises(CogniError, match="-b 0: must be >= 1"):
        parse_int_list(["0"], "-b", [1], minimum=1)


def test_every_combination_runs_and_zero_skips() -> None:
    options = BenchOptions(prompt_lengths=[64, 128], generation_lengths=[0, 8], batch_sizes=[1, 2], repetitions=3)
    assert options.tests() == [("pp", 64, 0, 1), ("pp", 64, 0, 2), ("pp", 128, 0, 1), ("pp", 128, 0, 2),
                               ("tg", 0, 8, 1), ("tg", 0, 8, 2)]
    assert options.context_needed == 128
    assert total_runs(options) == 6 * 4
    assert total_runs(BenchOptions(prompt_lengths=[0], generation_lengths=[0], train=True, repetitions=2)) == 4


def test_cpu_precision_is_fp32_unless_native_bf16_is_asked_for(monkeypatch) -> None:
    from cognimamba.system import hardware

    assert inference_dtype("auto", CPU) == torch.float32
    with pytest.raises(CogniError, match="--dtype fp16: fp16 is used on CUDA GPUs only"):
        inference_dtype("fp16", CPU)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(CogniError, match="--dtype bf16: this CPU has no native bf16"):
        inference_dtype("bf16", CPU)
    with pytest.raises(CogniError, match="precision bf16: this CPU has no native bf16"):
        hardware.pick_dtype("bf16", CPU)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert inference_dtype("bf16", CPU) == torch.bfloat16 == hardware.pick_dtype("bf16", CPU)
    assert hardware.pick_dtype("auto", CPU) == hardware.pick_dtype("fp16", CPU) == torch.float32


def test_report_shape_on_a_tiny_run(tiny_run: Path) -> None:
    options = BenchOptions(prompt_lengths=[16, 100], generation_lengths=[8], batch_sizes=[1, 2], repetitions=2,
                           train=True)
    bench = load_bench_model(tiny_run, None, CPU, torch.float32, options.context_needed)
    assert bench.model.config.max_seq_len == 100  # the run's 64 positions, extended for pp100
    assert bench.config.model.max_seq_len == 64  # training still uses the run's own length
    seen: list[str] = []
    report = run_bench(bench, options, on_run=seen.append)
    assert len(seen) == total_runs(options)
    assert [(r.test, r.batch) for r in report.results] == [("pp16", 1), ("pp16", 2), ("pp100", 1), ("pp100", 2),
                                                          ("tg8", 1), ("tg8", 2), ("train64", 4)]
    for result in report.results:
        assert len(result.samples) == 2 and all(sample > 0 for sample in result.samples)
        assert result.mean > 0 and result.std >= 0 and result.dtype == "fp32"
    train = report.results[-1]
    assert 0 < train.mfu < 10 and train.peak_memory_bytes > 0 and train.warmup_seconds > 0
    assert report.peak_flops > 0 and report.weights == "trained" and report.parameters > 0
    payload = json.loads(json.dumps(report.to_dict()))
    assert {"model", "parameters", "device", "threads", "notes", "peak_flops", "tests"} <= set(payload)
    assert any("extended to 100" in note for note in payload["notes"])
    assert {"test", "mean", "std", "samples", "batch", "n_prompt", "n_gen"} <= set(payload["tests"][0])
    assert "mfu" in payload["tests"][-1] and "mfu" not in payload["tests"][0]


def test_decode_measurement_leaves_the_thread_count_alone(tiny_run: Path) -> None:
    bench = load_bench_model(tiny_run, None, CPU, torch.float32, 16)
    before = torch.get_num_threads()
    samples, warmup_seconds = measure_decode(bench, 4, 1, repetitions=1)
    assert len(samples) == 1 and warmup_seconds > 0
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_compiled_batch_decode_is_the_servers_compiled_slot_step(tiny_run: Path) -> None:
    """`bench -b 2 --compile` times what `cogni serve` runs: the compiled slot step, one graph for every step."""
    bench = load_bench_model(tiny_run, None, CPU, torch.float32, 16)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    samples, _ = measure_decode(bench, 4, 2, repetitions=2, compile=True)
    assert len(samples) == 2 and all(sample > 0 for sample in samples)
    # decode_slots' graph, and one for the first position, whose single-entry read torch.compile specialises
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs in (1, 2)


@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_pp_and_tg_with_other_weight_formats(tiny_run: Path, weights: str) -> None:
    pytest.importorskip("torchao", reason="int8 weights need torchao (the cpu-int8 extra)")
    from cognimamba.system.hardware import cpu_has_flag, cpu_has_native_bf16

    if weights == "bf16" and not cpu_has_native_bf16() and not cpu_has_flag("avx2"):
        pytest.skip("bf16 weights need a CPU with native bf16 or AVX2")
    bench = load_bench_model(tiny_run, None, CPU, torch.float32, 16, weight_format=weights)
    # Activations and KV cache: bf16 where the CPU has native bf16, else fp32 beside bf16 weights.
    assert bench.dtype == (torch.bfloat16 if weights == "bf16" and cpu_has_native_bf16() else torch.float32)
    options = BenchOptions(prompt_lengths=[16], generation_lengths=[8], repetitions=1, threads=1)
    report = run_bench(bench, options)
    assert [(result.test, result.dtype) for result in report.results] == [("pp16", weights), ("tg8", weights)]
    assert all(result.mean > 0 for result in report.results)


@pytest.mark.slow
def test_cli_json_csv_and_table(tiny_run: Path) -> None:
    result = run_cli("bench", str(tiny_run), "-p", "16", "-n", "8", "-r", "2", "--train", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    tests = {test["test"]: test for test in payload["tests"]}
    assert set(tests) == {"pp16", "tg8", "train64"}
    assert len(tests["pp16"]["samples"]) == 2 and tests["train64"]["mfu"] > 0
    assert any("greedy argmax" in note for note in payload["notes"])

    result = run_cli("bench", str(tiny_run), "-p", "16", "-n", "0", "-b", "1,2", "-r", "1", "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(row["test"], row["batch"]) for row in rows] == [("pp16", "1"), ("pp16", "2")]
    assert float(rows[0]["mean_tokens_per_s"]) > 0

    result = run_cli("bench", "--profile", "cpu", "-p", "8", "-n", "4", "-r", "1")
    assert result.returncode == 0, result.stderr
    for column in ("model", "params", "device", "dtype", "threads", "test", "t/s", "pp8", "tg4", "sampling"):
        assert column in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["--profile", "cpu", "-p", "abc"], "-p 'abc'"),
    (["--profile", "cpu", "-p", "0", "-n", "0"], "nothing to measure"),
    (["--profile", "cpu", "--dtype", "fp16"], "--dtype fp16"),
    ([], "give a run dir"),
    (["--profile", "nope"], "unknown profile"),
])
def test_cli_mistakes_are_one_red_line(args: list[str], message: str) -> None:
    result = run_cli("bench", *args, "-r", "1")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_training_paths_run(dtype: torch.dtype) -> None:
    """The autocast (bf16) and gradient-scaler (fp16) branches CUDA takes, exercised on CPU autocast."""
    from cognimamba.evaluation.bench import measure_training
    from tests.conftest import tiny_config

    config = tiny_config()
    config.model.vocab_size = 512
    result = measure_training(config, CPU, dtype, repetitions=1)
    assert result.dtype == {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    assert result.test == "train64" and result.batch == 4 and len(result.samples) == 1 and result.samples[0] > 0


@pytest.mark.slow
def test_cli_compile_reports_the_warm_up_apart(tiny_run: Path) -> None:
    result = run_cli("bench", str(tiny_run), "-p", "0", "-n", "6", "-r", "1", "--compile", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    (tg,) = payload["tests"]
    assert tg["test"] == "tg6" and len(tg["samples"]) == 1 and tg["warmup_seconds"] > 0
    assert any("torch.compile" in note for note in payload["notes"])


def test_accumulated_step_updates_like_one_batch() -> None:
    """Micro-batches accumulate: two halves of the loss on the same batch give the one-batch update."""
    from cognimamba.model.transformer import LanguageModel
    from cognimamba.train.optim import build_optimizer
    from cognimamba.train.step import training_step
    from tests.conftest import tiny_config

    config = tiny_config()
    config.model.vocab_size = 256
    tokens = torch.randint(0, 256, (2, config.model.max_seq_len + 1), generator=torch.Generator().manual_seed(0))
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    updated = []
    for micro_batches in (1, 2):
        torch.manual_seed(0)
        model = LanguageModel(replace(config.model, dropout=0.0))
        optimizer = build_optimizer(model, config.train, CPU)
        training_step(model, optimizer, [(inputs, targets)] * micro_batches, contextlib.nullcontext(), 1.0)
        updated.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(updated[0], updated[1], rtol=1e-5, atol=1e-6)


def test_training_counts_every_micro_batch_of_the_step() -> None:
    from cognimamba.evaluation.bench import measure_training
    from tests.conftest import tiny_config

    config = tiny_config("train.grad_accum_steps=3")
    config.model.vocab_size = 256
    result = measure_training(config, CPU, torch.float32, repetitions=1)
    assert result.grad_accum == 3 and result.batch == config.train.micro_batch_size
    assert not result.compiled and result.to_dict()["grad_accum"] == 3


def test_training_runs_eagerly_when_compile_cannot(monkeypatch) -> None:
    """train.compile without a compiler for the device: the step runs eagerly and the report says why."""
    from cognimamba.system import hardware

    monkeypatch.setattr(hardware, "compile_unavailable", lambda device: "torch.compile needs a C++ compiler")
    bench = load_bench_model(None, "cpu", CPU, torch.float32, 16)
    bench.config.model.vocab_size = 256
    bench.config.model.max_seq_len = 16
    bench.config.train.micro_batch_size = 2
    report = run_bench(bench, BenchOptions(prompt_lengths=[0], generation_lengths=[0], train=True, repetitions=1,
                                           compile=True))
    (train,) = report.results
    assert not train.compiled
    assert any("train.compile is on, but torch.compile needs a C++ compiler" in note for note in report.notes)


@pytest.mark.slow
def test_cli_no_compile_and_compile_flags(tiny_run: Path) -> None:
    result = run_cli("bench", str(tiny_run), "-p", "8", "-n", "0", "-r", "1", "--train", "--no-compile", "--json")
    assert result.returncode == 0, result.stderr
    train = json.loads(result.stdout)["tests"][-1]
    assert train["compiled"] is False and train["grad_accum"] == 1
    result = run_cli("bench", str(tiny_run), "-p", "8", "-n", "0", "-r", "1", "--train", "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[-1]["test"] == "train64" and rows[-1]["grad_accum"] == "1" and rows[0]["grad_accum"] == ""
