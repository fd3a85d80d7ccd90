"""Fine-tuning defaults: a fine-tune on chat data gets a context that holds its conversations, the same tokens
per step, and fine-tuning's own rate, warmup and dropout; whatever the user set stays as set."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from cognimamba.config.profiles import FINETUNE_MAX_SEQ_LEN, get_profile
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.train.entry import TrainOptions, train
from cognimamba.train.finetune_defaults import (
    DEFAULT_FINETUNE_DROPOUT,
    DEFAULT_FINETUNE_LR_FACTOR,
    FINETUNE_DROPOUT,
    FINETUNE_LR_FACTOR,
    TOLERATED_OVER_CONTEXT,
    apply_finetune_defaults,
    choose_finetune_defaults,
)
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def chat_data(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> DataDir:
    """Tool conversations of a few hundred tokens each: longer than the tiny base's 64-token context."""
    out = tmp_path_factory.mktemp("chat") / "tools"
    prepare_chat(ChatPrepareOptions([MixEntry("synthetic-tools", count=60)], tiny_data / "tokenizer.json", out=out,
                                    val_fraction=0.1), Console(quiet=True))
    return DataDir.open(out)


def test_the_context_grows_to_hold_the_conversations_and_a_step_keeps_its_tokens(chat_data: DataDir) -> None:
    config = tiny_config("model.max_seq_len=256", "train.micro_batch_size=16")  # the cpu profile's step
    choice = choose_finetune_defaults(config, chat_data, frozenset(), lora=False)
    context = choice.values["model.max_seq_len"]
    assert context == 1024  # doublings of the base's 256, stopped by the cpu profile's limit
    micro, accum = choice.values["train.micro_batch_size"], choice.values.get("train.grad_accum_steps", 1)
    assert (micro, accum * micro * context) == (4, 16 * 256)  # the base's tokens per step
    profile = get_profile("cpu").train
    assert choice.values["train.lr"] == pytest.approx(profile.lr * FINETUNE_LR_FACTOR["cpu"])
    assert choice.values["train.warmup_steps"] < profile.warmup_steps
    assert choice.values["model.dropout"] == FINETUNE_DROPOUT["cpu"]
    line = choice.describe()
    assert f"model.max_seq_len={context}" in line and "the profile allows up to 1024" in line
    assert "override any with --set" in line
    apply_finetune_defaults(config, choice)
    assert (config.model.max_seq_len, config.train.micro_batch_size) == (context, micro)


def test_a_gpu_profile_fine_tunes_at_a_third_of_its_rate_with_dropout(chat_data: DataDir) -> None:
    config = tiny_config("model.max_seq_len=256")
    config.profile = "4gb"
    values = choose_finetune_defaults(config, chat_data, frozenset(), lora=False).values
    assert values["train.lr"] == pytest.approx(get_profile("4gb").train.lr * DEFAULT_FINETUNE_LR_FACTOR)
    assert values["model.dropout"] == DEFAULT_FINETUNE_DROPOUT > FINETUNE_DROPOUT["cpu"]


def test_muon_fine_tunes_its_matrices_at_the_same_lowered_rate(chat_data: DataDir) -> None:
    """Muon's groups hold most of the parameters: a fine-tune lowers muon_lr by the factor it lowers lr by."""
    for profile_name in ("cpu", "4gb"):
        config = tiny_config("train.optimizer=muon")
        config.profile = profile_name
        profile = get_profile(profile_name).train
        values = choose_finetune_defaults(config, chat_data, frozenset(), lora=False).values
        factor = FINETUNE_LR_FACTOR.get(profile_name, DEFAULT_FINETUNE_LR_FACTOR)
        assert values["train.muon_lr"] == pytest.approx(profile.muon_lr * factor)
        assert values["train.muon_lr"] / profile.muon_lr == pytest.approx(values["train.lr"] / profile.lr)
    kept = choose_finetune_defaults(tiny_config("train.optimizer=muon"), chat_data, frozenset({"train.muon_lr"}),
                                    lora=False).values
    assert "train.muon_lr" not in kept and "train.lr" in kept


def test_the_shortest_context_that_holds_nearly_every_conversation_wins(chat_data: DataDir,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FINETUNE_MAX_SEQ_LEN, "cpu", 4096)
    context = choose_finetune_defaults(tiny_config(), chat_data, frozenset(), lora=False).values["model.max_seq_len"]
    assert context < 4096

    def over_context(length: int) -> float:
        fit = TokenWindows(chat_data, "train").alignment(length)
        assert fit is not None
        return (fit.trimmed + fit.skipped) / fit.conversations

    assert over_context(context) <= TOLERATED_OVER_CONTEXT < over_context(context // 2)


def test_what_the_user_set_is_kept(chat_data: DataDir) -> None:
    config = tiny_config()
    user_set = frozenset({"model.max_seq_len", "train.lr", "model.dropout"})
    choice = choose_finetune_defaults(config, chat_data, user_set, lora=False)
    assert set(choice.values) == {"train.warmup_steps"}
    longer = choose_finetune_defaults(config, chat_data, frozenset({"train.micro_batch_size"}), lora=False)
    assert "model.max_seq_len" in longer.values and "train.micro_batch_size" not in longer.values


def test_text_data_and_lora_keep_the_profile_settings(chat_data: DataDir, tiny_data: Path) -> None:
    assert choose_finetune_defaults(tiny_config(), DataDir.open(tiny_data), frozenset(), lora=False).values == {}
    lora = choose_finetune_defaults(tiny_config(), chat_data, frozenset(), lora=True)
    assert set(lora.values) <= {"model.max_seq_len", "train.micro_batch_size", "train.grad_accum_steps"}
    assert "model.max_seq_len" in lora.values


def test_a_base_whose_context_already_fits_is_left_as_it_is(chat_data: DataDir) -> None:
    choice = choose_finetune_defaults(tiny_config("model.max_seq_len=1024"), chat_data, frozenset(), lora=False)
    assert "model.max_seq_len" not in choice.values and "train.micro_batch_size" not in choice.values


@pytest.mark.slow
def test_a_fine_tune_with_nothing_set_says_what_it_chose(tiny_run: Path, chat_data: DataDir, tmp_path: Path) -> None:
    config = tiny_config("train.max_steps=2", "train.eval_every=0", "train.save_every=0")
    user_set = frozenset({"train.max_steps", "train.eval_every", "train.save_every", "train.eval_batches"})
    log = io.StringIO()
    train(TrainOptions(config=config, data=chat_data.path, out=tmp_path / "ft", init_from=tiny_run,
                       user_set=user_set), Console(file=log, width=400))
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    chosen = saved["finetune_defaults"]
    assert saved["model"]["max_seq_len"] == chosen["model.max_seq_len"] > 64
    assert saved["model"]["dropout"] == FINETUNE_DROPOUT["cpu"] and saved["train"]["lr"] == chosen["train.lr"]
    text = log.getvalue()
    assert "fine-tuning defaults: model.max_seq_len=" in text and "chat windows: 54 conversations" in text
