"""The fixed-point model's two phases: phase 2 trains the head alone, on contexts cached in the run dir and
keyed by data and weights, and on assistant tokens only for chat data."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from cognimamba.config.overrides import resolve_config
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.model.build import build_model
from cognimamba.model.fixed_point import FixedPointModel
from cognimamba.model.loss import IGNORE_INDEX
from cognimamba.runs.layout import CONTEXT_CACHE
from cognimamba.train import context_cache
from cognimamba.train.context_cache import CachedContexts
from cognimamba.train.display import TrainingDisplay
from cognimamba.train.fixed_point_phases import FixedPointPhases
from cognimamba.train.loggers import MetricsLog
from cognimamba.train.optim import build_optimizer

FIXED_POINT = ["model.arch=fixed_point", "model.fixed_point_preset=small", "model.fixed_point_context_dim=32",
               "model.fixed_point_hidden_dim=64", "model.max_seq_len=64", "train.micro_batch_size=4"]
QUIET = TrainingDisplay(Console(quiet=True), "", total=1, by_time=False, enabled=False)
NO_AUTOCAST = contextlib.nullcontext()


@pytest.fixture(autouse=True)
def few_cached_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Contexts of 32 windows at most: the cache's behaviour, not its size, is under test."""
    monkeypatch.setattr(context_cache, "MAX_CACHED_BYTES", 32 * 64 * 32 * 2)  # at seq_len 64, context 32


def phases_on(data_path: Path, run: Path, *settings: str) -> tuple[FixedPointPhases, torch.optim.Optimizer]:
    config = resolve_config("cpu", None, [*FIXED_POINT, *settings])
    data = DataDir.open(data_path)
    config.model.vocab_size = data.vocab_size
    torch.manual_seed(0)
    model = build_model(config.model)
    assert isinstance(model, FixedPointModel)
    run.mkdir(parents=True, exist_ok=True)
    windows = TokenWindows(data, "train", seed=config.train.seed)
    phases = FixedPointPhases(model, config, run, data, windows, torch.device("cpu"), is_main=True)
    return phases, build_optimizer(model, config.train, torch.device("cpu"))


@pytest.mark.slow
def test_phase2_trains_only_the_head_on_contexts_it_reads_back(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    phases, optimizer = phases_on(tiny_data, run)
    settings = phases.config.train
    model = phases.model
    for step in range(2):  # a little of phase 1 first, so the contexts are the trained updater's
        phases.step_loss(step, 64, settings, NO_AUTOCAST, None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    phases.begin_step(2, 1.0, optimizer, QUIET, MetricsLog(run, None, True))
    assert phases.phase == 2 and (run / CONTEXT_CACHE).is_file()
    frozen = [p.detach().clone() for p in model.context_parameters()]
    head = [p.detach().clone() for p in model.head.parameters()]
    for step in range(2, 5):
        loss = phases.step_loss(step, 64, settings, NO_AUTOCAST, None)
        assert 0 < loss.mean < 10
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert all(torch.equal(before, after) for before, after in zip(frozen, model.context_parameters(), strict=True))
    assert all(not torch.equal(before, after) for before, after in zip(head, model.head.parameters(), strict=True))
    assert '"phase1_convergence_rate"' in (run / "metrics.jsonl").read_text()

    # A resumed phase 2 (same data, same frozen weights) reads the cached contexts back; other weights do not.
    again, again_optimizer = phases_on(tiny_data, run)
    again.model.load_state_dict(model.state_dict())
    again.begin_step(3, 1.0, again_optimizer, QUIET, MetricsLog(run, None, False))
    assert again.contexts is not None and phases.contexts is not None
    assert again.contexts.first_step == 2 and torch.equal(again.contexts.contexts, phases.contexts.contexts)
    assert phases.contexts.left_out > 0  # past the cap, windows are left out (and said so)
    fresh, fresh_optimizer = phases_on(tiny_data, run)  # untrained updater: another key, solved anew
    fresh.begin_step(0, 1.0, fresh_optimizer, QUIET, MetricsLog(run, None, False))
    assert fresh.contexts is not None and fresh.contexts.first_step == 0


def test_phase2_loss_is_taken_on_assistant_tokens_only(tiny_data: Path, tmp_path: Path) -> None:
    chat = prepare_chat(ChatPrepareOptions([MixEntry("synthetic-chat", count=30)], tiny_data / "tokenizer.json",
                                           out=tmp_path / "chat")).data_dir
    phases, optimizer = phases_on(chat.path, tmp_path / "run", "model.max_seq_len=256", "model.dropout=0")
    phases.begin_step(0, 1.0, optimizer, QUIET, MetricsLog(tmp_path / "run", None, False))
    cached = phases.contexts
    assert cached is not None
    trained = cached.targets != IGNORE_INDEX
    assert 0 < int(trained.sum()) < trained.numel()  # the chat windows' prompts and padding take no loss

    # The step's loss is the head's cross-entropy on the trained (assistant) targets alone.
    with torch.no_grad():
        phases.model.head.output.weight.normal_(std=1.0)  # logits far from uniform, so the positions matter
    only = CachedContexts(cached.inputs[:2], cached.targets[:2], cached.contexts[:2], 1.0, 2.0, 0, 0)
    phases.contexts = only
    settings = phases.config.train
    settings.micro_batch_size = 2
    loss = phases.step_loss(0, 256, settings, NO_AUTOCAST, None)
    contexts, inputs, targets = only.batch(settings.seed, 0, 0, 2, torch.device("cpu"))
    with torch.no_grad():
        logits = phases.model.eval().head_logits(contexts, inputs)
    mask = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[mask], targets[mask])
    assert int(loss.tokens) == int(mask.sum())
    torch.testing.assert_close(torch.tensor(loss.mean), expected, atol=1e-4, rtol=0)
