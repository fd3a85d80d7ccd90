"""A hybrid (Mamba-2 + attention) model through the run-dir contract: save, load, resume, LoRA."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from cognimamba.evaluation.checks import test_model as check_run
from cognimamba.runs.layout import WEIGHTS
from cognimamba.runs.loading import load_run
from cognimamba.runs.lora import LoraSettings, apply_lora, parse_targets
from cognimamba.train.entry import TrainOptions, train
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow
HYBRID = ["model.layer_pattern=MA", "model.mamba_head_dim=16", "model.mamba_state_size=16",
          "model.mamba_chunk_size=16", "train.save_every=6", "train.keep_last=4", "train.max_steps=12"]


@pytest.fixture(scope="module")
def hybrid_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hybrid") / "run"
    train(TrainOptions(config=tiny_config(*HYBRID), data=tiny_data, out=out, show_progress=False), Console(quiet=True))
    return out


def test_hybrid_run_loads_with_its_weights_and_passes_test_model(hybrid_run: Path) -> None:
    loaded = load_run(hybrid_run)
    assert loaded.config.model.layer_pattern == "MA"
    saved = load_file(str(hybrid_run / WEIGHTS))
    assert "layers.0.mamba.A_log" in saved and "layers.1.attention.qkv.weight" in saved
    assert all(torch.equal(loaded.model.state_dict()[name], tensor) for name, tensor in saved.items())
    report = check_run(loaded)
    assert report.passed, [check for check in report.checks if not check.passed]
    assert any(check.name == "KV cache and Mamba-2 state equal full forward" for check in report.checks)


def test_hybrid_run_resumes_exactly(hybrid_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    """Drop the last checkpoint, resume from step 6: the weights at step 12 are the uninterrupted run's."""
    resumed = tmp_path / "resumed"
    shutil.copytree(hybrid_run, resumed)
    last = sorted((resumed / "checkpoints").iterdir())[-1]
    assert last.name.endswith("12")
    shutil.rmtree(last)
    train(TrainOptions(config=tiny_config(*HYBRID), data=tiny_data, out=resumed, resume=True, show_progress=False),
          Console(quiet=True))
    ours, theirs = load_file(str(resumed / WEIGHTS)), load_file(str(hybrid_run / WEIGHTS))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_lora_targets_the_mamba_projections(hybrid_run: Path) -> None:
    model = apply_lora(load_run(hybrid_run).model, LoraSettings(rank=2, targets=parse_targets("mamba")))
    trainable = {name.split(".")[-4] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"in_proj", "out_proj"}
    every = apply_lora(load_run(hybrid_run).model, LoraSettings(rank=2, targets=parse_targets("all")))
    trainable = {name.split(".")[-4] for name, p in every.named_parameters() if p.requires_grad}
    assert trainable == {"in_proj", "out_proj", "qkv", "proj", "gate_up", "down"}


def test_lora_fine_tune_of_a_hybrid_loads_merged(hybrid_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    config = tiny_config(*HYBRID, "train.max_steps=6", "train.lr=1e-2", "train.warmup_steps=0")
    train(TrainOptions(config=config, data=tiny_data, out=out, init_from=hybrid_run, show_progress=False,
                       lora=LoraSettings(rank=2, dropout=0.0, targets=parse_targets("mamba"))), Console(quiet=True))
    base, tuned = load_run(hybrid_run).model.state_dict(), load_run(out).model.state_dict()
    assert not torch.equal(tuned["layers.0.mamba.in_proj.weight"], base["layers.0.mamba.in_proj.weight"])
    assert torch.equal(tuned["layers.1.attention.qkv.weight"], base["layers.1.attention.qkv.weight"])
    assert check_run(load_run(out)).passed
