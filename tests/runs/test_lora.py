"""LoRA through peft: only adapters train, PEFT's own files, peft reloads them, merging keeps the logits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

import cognimamba
from cognimamba.config.schema import ModelConfig
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import train_tokenizer
from cognimamba.model.transformer import LanguageModel
from cognimamba.runs.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CONFIG, GENERATION, TOKENIZER, WEIGHTS
from cognimamba.runs.loading import read_config, write_run_files
from cognimamba.runs.lora import LoraSettings, adapter_state, apply_lora, parse_targets, write_adapter_config
from cognimamba.runs.manifest import write_manifest
from cognimamba.runs.merge import merge_to_run
from cognimamba.runs.tensors import read_weights, save_weights
from cognimamba.system.fileio import sha256_file
from cognimamba.train.entry import TrainOptions, train
from tests.conftest import REPO, run_cli, tiny_config
from tests.float_bounds import assert_within, logits_bound

LORA_ARGS = ["--lora", "--lora-rank", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--max-steps", "12",
             "--set", "model.max_seq_len=128", "--set", "train.lr=1e-2", "--set", "train.warmup_steps=0",
             "--set", "train.micro_batch_size=4", "--set", "train.eval_every=6", "--set", "train.save_every=6",
             "--set", "train.eval_batches=2"]


@pytest.fixture(scope="module")
def chat_data(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 short instruction conversations: every one fits the tests' 128-token context whole."""
    folder = tmp_path_factory.mktemp("chat")
    records = [{"instruction": f"Tell me about the {animal} number {index}.",
                "output": f"The {animal} number {index} is a happy {animal} who likes to play."}
               for index in range(40) for animal in ("cat", "dog")]
    (folder / "short.json").write_text(json.dumps(records), encoding="utf-8")
    out = folder / "short"
    prepare_chat(ChatPrepareOptions([MixEntry(str(folder / "short.json"), format="alpaca")], tiny_run / TOKENIZER,
                                    out=out), Console(quiet=True))
    return out


@pytest.fixture(scope="module")
def base_hash(tiny_run: Path) -> str:
    return sha256_file(tiny_run / WEIGHTS)


@pytest.fixture(scope="module")
def lora_cli(tiny_run: Path, chat_data: Path, base_hash: str, tmp_path_factory: pytest.TempPathFactory,
             cogni_home: Path) -> tuple[Path, str]:
    """A LoRA run trained through the CLI, and what the CLI printed."""
    out = tmp_path_factory.mktemp("lora") / "run"
    result = run_cli("train", "--data", str(chat_data), "--init-from", str(tiny_run), "--out", str(out), *LORA_ARGS,
                     env={"COGNI_HOME": str(cogni_home)})
    assert result.returncode == 0, result.stderr
    return out, result.stderr


def tiny_model() -> LanguageModel:
    return LanguageModel(tiny_config().model)


def test_only_adapter_matrices_are_trainable() -> None:
    model = apply_lora(tiny_model(), LoraSettings(rank=4, targets=parse_targets("all")))
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    assert {name.split(".")[-4] for name in trainable} == {"qkv", "proj", "gate_up", "down"}
    # rank x (in + out) per target: qkv 64->128, proj 64->64, gate_up 64->256, down 128->64; two layers.
    assert sum(trainable.values()) == 2 * 4 * ((64 + 128) + (64 + 64) + (64 + 256) + (128 + 64))
    attention_only = apply_lora(tiny_model(), LoraSettings(rank=2, targets=parse_targets("attention")))
    names = {name for name, p in attention_only.named_parameters() if p.requires_grad}
    assert all(".qkv." in name or ".proj." in name for name in names)
    with pytest.raises(CogniError, match="--lora-targets"):
        LoraSettings(targets=("q_proj",))


def test_lora_run_holds_only_the_adapter_and_base_is_untouched(lora_cli: tuple[Path, str], tiny_run: Path,
                                                                base_hash: str) -> None:
    run, output = lora_cli
    assert "6.66k trainable" in output  # the progress header: adapter parameters vs the total
    assert sha256_file(tiny_run / WEIGHTS) == base_hash
    assert not (run / WEIGHTS).exists()
    for directory in (run, run / "best", run / "checkpoints" / "step-00000012"):
        assert (directory / ADAPTER_WEIGHTS).is_file(), directory
    adapter = read_weights(run / ADAPTER_WEIGHTS)
    assert all(name.startswith("base_model.model.layers.") and (".lora_A." in name or ".lora_B." in name)
               for name in adapter)
    assert max(float(t.abs().max()) for name, t in adapter.items() if "lora_B" in name) > 0  # it trained
    config, payload = read_config(run)
    assert config.model.max_seq_len == 128 and config.model.dim == 64
    assert payload["lora"]["rank"] == 4 and payload["lora"]["base_run"] == str(tiny_run.resolve())
    assert payload["lora"]["base_weights_sha256"] == base_hash
    adapter_config = json.loads((run / ADAPTER_CONFIG).read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 4
    assert adapter_config["base_model_name_or_path"] == str(tiny_run.resolve())


@pytest.mark.slow
def test_peft_reloads_the_adapter_and_merging_keeps_logits(lora_cli: tuple[Path, str], tiny_run: Path,
                                                           tmp_path: Path, cogni_home: Path) -> None:
    from peft import PeftConfig, PeftModel

    run, _ = lora_cli
    assert PeftConfig.from_pretrained(str(run)).r == 4
    base = cognimamba.load(tiny_run)
    tuned, _ = read_config(run)
    model = LanguageModel(tuned.model)
    model.load_state_dict(base.model.state_dict())
    peft_model = PeftModel.from_pretrained(model, str(run)).eval()  # peft's own loader, nothing of ours
    # longer than the base's 64: RoPE is relative
    ids = torch.randint(0, tuned.model.vocab_size, (2, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        unmerged = peft_model(ids)
        loaded = cognimamba.load(run)  # load_run on a LoRA run: base + adapter, merged
        merged_at_load = loaded.model(ids)
        assert loaded.config.model.max_seq_len == 128
        # peft adds B(Ax) to Wx where the merged model sums (W + BA)x: the same forward in another order.
        assert_within(unmerged, merged_at_load, logits_bound(loaded.model, ids))
        assert (peft_model(ids[:, :64]) - base.model(ids[:, :64])).abs().max() > 1e-4  # the adapter changes the model

    result = run_cli("merge", str(tiny_run), str(run), "--out", str(tmp_path / "merged"),
                     env={"COGNI_HOME": str(cogni_home)})
    assert result.returncode == 0, result.stderr
    merged_run = cognimamba.load(tmp_path / "merged")
    assert (tmp_path / "merged" / WEIGHTS).is_file() and not (tmp_path / "merged" / ADAPTER_CONFIG).exists()
    with torch.no_grad():
        assert torch.equal(merged_run.model(ids), merged_at_load)


@pytest.mark.slow
def test_adapter_on_a_different_base_is_a_clear_error(lora_cli: tuple[Path, str], tiny_run: Path, tmp_path: Path,
                                                      cogni_home: Path) -> None:
    run, _ = lora_cli
    retrained = tmp_path / "retrained"  # same architecture, different weights
    shutil.copytree(tiny_run, retrained, ignore=shutil.ignore_patterns("checkpoints", "best"))
    weights = read_weights(retrained / WEIGHTS)
    weights["norm.weight"] = weights["norm.weight"] * 1.5
    save_weights(retrained / WEIGHTS, weights)
    write_manifest(retrained, [WEIGHTS, CONFIG, TOKENIZER, GENERATION])
    result = run_cli("merge", str(retrained), str(run), "--out", str(tmp_path / "x"),
                     env={"COGNI_HOME": str(cogni_home)})
    assert result.returncode == 2
    assert "trained on a different base model" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    other = tmp_path / "other"  # a different architecture
    config = tiny_config("model.dim=32", "model.ffn_dim=96")
    config.model.vocab_size = 512
    model = LanguageModel(config.model)
    write_run_files(other, config, model, cognimamba.load(tiny_run).tokenizer)
    save_weights(other / WEIGHTS, {name: t for name, t in model.state_dict().items() if name != "lm_head.weight"})
    with pytest.raises(CogniError, match=r"different base model \(model\.dim = 64, this base has 32\)"):
        merge_to_run(other, run, tmp_path / "y")


@pytest.mark.slow
def test_full_fine_tune_may_lengthen_the_context_only(tiny_run: Path, chat_data: Path, tmp_path: Path) -> None:
    config = tiny_config("train.max_steps=3", "model.max_seq_len=128", "model.dim=128")
    options = TrainOptions(config=config, data=chat_data, out=tmp_path / "ft", init_from=tiny_run,
                           model_overrides={"max_seq_len": 128}, show_progress=False)
    result = train(options, Console(quiet=True))
    tuned, payload = read_config(result.run)
    assert tuned.model.max_seq_len == 128 and tuned.model.dim == 64  # the base's architecture, a longer context
    assert payload["init_from"] == str(tiny_run.resolve())
    with pytest.raises(CogniError, match="keeps its architecture"):
        train(TrainOptions(config=tiny_config("train.max_steps=1"), data=chat_data, out=tmp_path / "bad",
                           init_from=tiny_run, model_overrides={"dim": 128}, show_progress=False), Console(quiet=True))
    with pytest.raises(CogniError, match="add --init-from RUN"):
        train(TrainOptions(config=tiny_config("train.max_steps=1"), data=chat_data, out=tmp_path / "nobase",
                           lora=LoraSettings(), show_progress=False), Console(quiet=True))


@pytest.mark.slow
def test_data_from_another_tokenizer_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    other = train_tokenizer([f"story number {i} about a cat and a dog" for i in range(200)], 300)
    other.save(str(tmp_path / "tokenizer.json"))
    data = tmp_path / "data"
    prepare_chat(ChatPrepareOptions([MixEntry("synthetic-tools", count=30)], tmp_path / "tokenizer.json", out=data),
                 Console(quiet=True))
    with pytest.raises(CogniError, match=r"different tokenizer .* --tokenizer .*tokenizer\.json"):
        train(TrainOptions(config=tiny_config("train.max_steps=1"), data=data, out=tmp_path / "run",
                           init_from=tiny_run, lora=LoraSettings(), show_progress=False), Console(quiet=True))


@pytest.mark.slow
def test_lora_run_resumes(lora_cli: tuple[Path, str], chat_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "resumed"
    shutil.copytree(lora_cli[0], run)
    before = read_weights(run / ADAPTER_WEIGHTS)
    config = tiny_config("train.max_steps=15", "train.lr=1e-2", "train.warmup_steps=0")
    result = train(TrainOptions(config=config, data=chat_data, out=run, resume=True, show_progress=False),
                   Console(quiet=True))
    assert result.step == 15
    after = read_weights(run / ADAPTER_WEIGHTS)
    assert set(after) == set(before) and any(not torch.equal(after[k], before[k]) for k in before)
    assert cognimamba.load(run).config.model.max_seq_len == 128


def test_unusable_architecture_override_is_named() -> None:
    from cognimamba.runs.lora import tuned_model_config

    base = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=64)
    assert tuned_model_config(base, {"max_seq_len": 256, "vocab_size": 9}, "BASE").max_seq_len == 256
    with pytest.raises(CogniError, match=r"model\.n_layers: fine-tuning BASE keeps its architecture"):
        tuned_model_config(base, {"n_layers": 4}, "BASE")


# A fresh interpreter loads an adapter: peft's first import is where torchao's import speaks up.
LOAD_ADAPTER = """
import json, sys, warnings
from pathlib import Path
from cognimamba.model.transformer import LanguageModel
from cognimamba.runs.lora import merge_adapter
from tests.conftest import tiny_config
assert "peft" not in sys.modules and "torchao" not in sys.modules
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    merge_adapter(LanguageModel(tiny_config().model), Path(sys.argv[1]))
print(json.dumps([f"{w.filename}: {w.message}" for w in caught]))
"""


def test_loading_an_adapter_says_nothing_from_torchao(tmp_path: Path) -> None:
    """torchao (installed for --weights int8) logs lines at import, through peft, about its own extensions and
    torch's pytree: nothing a LoRA run's user can act on."""
    pytest.importorskip("torchao")
    adapter = apply_lora(tiny_model(), LoraSettings(rank=2))
    write_adapter_config(tmp_path, adapter, "base")
    save_weights(tmp_path / ADAPTER_WEIGHTS, adapter_state(adapter))
    result = subprocess.run([sys.executable, "-c", LOAD_ADAPTER, str(tmp_path)], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [line for line in json.loads(result.stdout) if "torchao" in line] == []
    noise = [line for line in result.stderr.splitlines() if "torchao" in line or "is an Enum subclass" in line]
    assert noise == []
