"""train.compile on a CPU: compiled where a C++ compiler is present, else eager with one line saying why; work on a
passing thread."""

from __future__ import annotations

import contextlib
import math
import shutil
import threading
from dataclasses import replace

import pytest
import torch

from cognimamba.model.transformer import LanguageModel
from cognimamba.system.hardware import compiled_if_possible, on_passing_thread
from cognimamba.train.optim import build_optimizer
from cognimamba.train.step import training_step
from tests.conftest import tiny_config

CPU = torch.device("cpu")


def tiny_model() -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(replace(tiny_config().model, vocab_size=128))


def test_without_a_compiler_the_step_runs_eagerly_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no g++, c++, clang++ or cl on the PATH
    model = tiny_model()
    forward, problem = compiled_if_possible(model, CPU, wanted=True)
    assert forward is model
    assert problem == "torch.compile needs a C++ compiler for the CPU (g++, clang++ or MSVC's cl)"
    tokens = torch.randint(0, 128, (2, 17))
    optimizer = build_optimizer(model, tiny_config().train, CPU)
    loss = training_step(forward, optimizer, [(tokens[:, :-1], tokens[:, 1:].contiguous())], contextlib.nullcontext(),
                         grad_clip=1.0)
    assert math.isfinite(loss.mean)


def test_with_a_compiler_the_model_is_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name == "g++" else None)
    model = tiny_model()
    forward, problem = compiled_if_possible(model, CPU, wanted=True)
    assert problem is None
    assert forward is not model and forward._orig_mod is model  # compiles lazily, at its first call


def test_compile_off_is_eager_and_silent() -> None:
    model = tiny_model()
    assert compiled_if_possible(model, CPU, wanted=False) == (model, None)


def test_passing_thread_returns_the_result_and_raises_the_error_here() -> None:
    caller = threading.get_ident()
    ran_on = on_passing_thread(threading.get_ident)
    assert ran_on != caller
    assert all(thread.ident != ran_on for thread in threading.enumerate())  # it ended with the work
    assert on_passing_thread(lambda: torch.ones(3).sum().item()) == 3.0

    def fails() -> None:
        raise ValueError("bad checkpoint")

    with pytest.raises(ValueError, match="bad checkpoint"):
        on_passing_thread(fails)
