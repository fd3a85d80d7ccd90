"""Shared fixtures: a tiny real corpus, data dir and trained run, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY_MODEL = [
    "model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=128",
    "model.max_seq_len=64", "train.micro_batch_size=4", "train.warmup_steps=5", "train.eval_every=10",
    "train.eval_batches=2", "train.save_every=10", "train.log_every=5", "train.lr=3e-3",
    "train.precision=fp32",  # the cpu profile trains in bf16 where the CPU has it: tests are the same everywhere
]


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m cognimamba ARGS` as a user would, capturing output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cognimamba", *args], capture_output=True, text=True, env=full_env,
                          input=input, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="session")
def cogni_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cogni_home")
    os.environ["COGNI_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 300 procedural stories as a .txt file."""
    from cognimamba.data.synthetic.stories import generate_stories

    path = tmp_path_factory.mktemp("corpus") / "stories.txt"
    path.write_text("\n\n".join(generate_stories(300, seed=1)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_data(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory, cogni_home: Path) -> Path:
    """A prepared data dir with a 512-token BPE vocabulary."""
    from cognimamba.data.prepare import PrepareOptions, prepare_text

    out = tmp_path_factory.mktemp("data") / "stories"
    prepare_text(PrepareOptions(source=str(tiny_corpus), vocab_size=512, val_fraction=0.1, out=out))
    return out


def tiny_config(*extra: str):
    from cognimamba.config.overrides import resolve_config

    return resolve_config("cpu", None, [*TINY_MODEL, *extra])


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for 30 steps (a few seconds): a complete, loadable run dir."""
    from rich.console import Console

    from cognimamba.train.entry import TrainOptions, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    config = tiny_config("train.max_steps=30")
    train(TrainOptions(config=config, data=tiny_data, out=out, show_progress=False), Console(quiet=True))
    return out


# Tests that train a model (here, through the session's tiny run) are slow by definition, like those that spawn
# the CLI (marked where they are written): `pytest -m "not slow"` is the quick loop, CI runs everything.
TRAINING_FIXTURES = {"tiny_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
