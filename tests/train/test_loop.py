import json
from pathlib import Path

import pytest
import torch

import cognimamba
from cognimamba.runs.manifest import verify_manifest
from cognimamba.runs.metrics import read_metrics
from cognimamba.train.schedule import curriculum_seq_len, learning_rate, scheduled_dropout
from tests.conftest import TINY_MODEL, run_cli

TINY_SET = [arg for item in TINY_MODEL for arg in ("--set", item)]


def test_schedule_warmup_then_cosine_to_floor() -> None:
    assert learning_rate(0, 0.0, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert learning_rate(9, 0.05, 1.0, 10, 0.1) == pytest.approx(1.0, rel=0.01)
    assert learning_rate(50, 0.5, 1.0, 10, 0.1) == pytest.approx(0.55)
    assert learning_rate(100, 1.0, 1.0, 10, 0.1) == pytest.approx(0.1)


def test_dropout_is_off_in_the_first_pass_then_rises_to_its_peak() -> None:
    assert scheduled_dropout(0.3, 0.0, 4.0) == 0.0
    assert scheduled_dropout(0.3, 0.99, 4.0) == 0.0  # nothing has repeated yet
    assert scheduled_dropout(0.3, 3.0, 4.0) == pytest.approx(0.15)
    assert scheduled_dropout(0.3, 5.0, 4.0) == pytest.approx(0.3)
    assert scheduled_dropout(0.3, 14.0, 4.0) == pytest.approx(0.3)
    assert scheduled_dropout(0.3, 1.3, 4.0) == pytest.approx(0.02)  # in steps of 0.01, not a new rate every step
    assert scheduled_dropout(0.3, 0.0, 0.0) == 0.3  # no ramp: the peak throughout


def test_sequence_length_curriculum() -> None:
    stages = [64, 128, 256]
    assert curriculum_seq_len(0.0, stages, 0.3, 512) == 64
    assert curriculum_seq_len(0.15, stages, 0.3, 512) == 128
    assert curriculum_seq_len(0.29, stages, 0.3, 512) == 256
    assert curriculum_seq_len(0.5, stages, 0.3, 512) == 512


def test_tiny_run_dir_is_complete(tiny_run: Path) -> None:
    for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json",
                 "trainer_state.json", "metrics.jsonl", "manifest.json"):
        assert (tiny_run / name).is_file(), name
    assert verify_manifest(tiny_run) is None
    assert verify_manifest(tiny_run / "best") is None
    state = json.loads((tiny_run / "trainer_state.json").read_text())
    assert state["step"] == 30
    rows = read_metrics(tiny_run)
    train_rows = [r for r in rows if "train_loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    assert {"step", "train_loss", "lr", "tokens_per_second", "elapsed"} <= set(train_rows[0])
    assert {"step", "val_loss", "val_perplexity", "val_bits_per_byte"} <= set(val_rows[0])
    assert train_rows[-1]["train_loss"] < train_rows[0]["train_loss"]  # it learns


def test_load_api(tiny_run: Path) -> None:
    loaded = cognimamba.load(tiny_run)
    ids = torch.tensor([[1, 2, 3, 4]])
    logits = loaded.model(ids)
    assert logits.shape == (1, 4, loaded.tokenizer.get_vocab_size())
    assert loaded.config.model.dim == 64


@pytest.mark.slow
def test_cli_train_then_resume_continues(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {"COGNI_HOME": str(tmp_path / "home")}
    first = run_cli("train", "--data", str(tiny_data), "--profile", "cpu", "--max-steps", "10", "--out", str(run),
                    *TINY_SET, env=env)
    assert first.returncode == 0, first.stderr
    assert "done" in first.stderr and "cogni chat" in first.stderr
    assert "dropout: none in the first pass over the 45,928 training tokens, then rising to 0.3" in first.stderr
    refused = run_cli("train", "--data", str(tiny_data), "--max-steps", "10", "--out", str(run), *TINY_SET, env=env)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run_cli("train", "--data", str(tiny_data), "--max-steps", "20", "--out", str(run), "--resume",
                      *TINY_SET, env=env)
    assert resumed.returncode == 0, resumed.stderr
    steps = [r["step"] for r in read_metrics(run) if "train_loss" in r]
    assert steps[-1] == 20 and 10 in steps and 15 in steps
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 20


@pytest.mark.slow
def test_cli_max_time_stops(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "timed"
    result = run_cli("train", "--data", str(tiny_data), "--max-time", "3s", "--out", str(run), *TINY_SET,
                     env={"COGNI_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["step"] >= 1 and state["elapsed"] < 30


@pytest.mark.slow
def test_bf16_on_cpu_trains_where_native_and_is_one_clear_line_elsewhere(tiny_data: Path, tmp_path: Path) -> None:
    from cognimamba.system.hardware import cpu_has_native_bf16

    run = tmp_path / "bf16"
    result = run_cli("train", "--data", str(tiny_data), "--max-steps", "2", "--out", str(run), *TINY_SET,
                     "--set", "train.precision=bf16", env={"COGNI_HOME": str(tmp_path / "home")})
    if cpu_has_native_bf16():
        assert result.returncode == 0, result.stderr
        assert "(bfloat16)" in result.stdout + result.stderr
        losses = [row["train_loss"] for row in read_metrics(run) if "train_loss" in row]
        assert losses and all(loss == loss and loss > 0 for loss in losses)  # finite, not NaN
        assert json.loads((run / "trainer_state.json").read_text())["step"] == 2
    else:
        assert result.returncode == 2
        assert "precision bf16: this CPU has no native bf16" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_test_model_json(tiny_run: Path, tmp_path: Path) -> None:
    result = run_cli("test-model", str(tiny_run), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert {"val_loss", "perplexity", "bits_per_byte"} <= set(report)
    assert report["perplexity"] == pytest.approx(2.718281828 ** report["val_loss"], rel=1e-6)
    names = {check["name"] for check in report["checks"]}
    assert {"forward pass", "gradients reach every parameter", "KV cache equals full forward", "greedy sample"} <= names
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text("Once upon a time, there was a little cat named Tom. Tom liked his red ball. " * 5)
    text_report = json.loads(run_cli("test-model", str(tiny_run), "--eval-file", str(eval_file), "--json").stdout)
    assert text_report["bits_per_byte"] > 0


@pytest.mark.slow
def test_plot(tiny_run: Path, tmp_path: Path) -> None:
    result = run_cli("plot", str(tiny_run))
    assert result.returncode == 0, result.stderr
    assert "train loss" in result.stdout and "val loss" in result.stdout and "step" in result.stdout


@pytest.mark.slow
def test_corpus_smaller_than_a_sequence(tmp_path: Path) -> None:
    corpus = tmp_path / "small.txt"
    corpus.write_text("A tiny story.\n\nAnother one.\n\n" * 3)
    data = tmp_path / "small"
    env = {"COGNI_HOME": str(tmp_path / "home")}
    assert run_cli("prepare", str(corpus), "--vocab-size", "300", "--out", str(data), env=env).returncode == 0
    result = run_cli("train", "--data", str(data), "--max-steps", "2", "--out", str(tmp_path / "r"), env=env)
    assert result.returncode == 2
    assert "smaller than one sequence" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_compile_without_a_compiler_trains_eagerly(tiny_data: Path, tmp_path: Path) -> None:
    """GPU profiles compile by default; where Inductor has no compiler the run goes on eagerly, and says so."""
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    run = tmp_path / "eager"
    result = run_cli("train", "--data", str(tiny_data), "--max-steps", "2", "--out", str(run), *TINY_SET,
                     "--set", "train.compile=true", env={"COGNI_HOME": str(tmp_path / "home"), "PATH": str(no_tools)})
    assert result.returncode == 0, result.stderr
    output = " ".join((result.stdout + result.stderr).split())
    assert "train.compile: torch.compile needs a C++ compiler for the CPU" in output
    assert "training runs eagerly" in output
    assert json.loads((run / "trainer_state.json").read_text())["step"] == 2
