"""Every family downstream: trained from scratch with `model.family`, checked by test-model, exported as itself,
resumed and served; an imported Qwen 3 fine-tuned with LoRA on tool-call chats, merged, and chatted with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from openai import OpenAI
from peft import PeftModel
from rich.console import Console

from cognimamba.chat.templates import CHATML
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.evaluation.checks import test_model as check_model
from cognimamba.interop.hf_dir import export_hf
from cognimamba.interop.import_hf import import_hf
from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.runs.layout import TOKENIZER
from cognimamba.runs.loading import load_run
from cognimamba.runs.metrics import read_metrics
from cognimamba.serve.engine import load_served_model
from cognimamba.train.entry import TrainOptions, train
from tests.conftest import run_cli, shared_data, tiny_config
from tests.interop.test_families import randomize, save_checkpoint
from tests.serve.server_thread import running_server

FAMILY_OVERRIDES = {"qwen2": [], "qwen3": ["model.head_dim=32"],
                    "gemma3": ["model.sliding_window=16", "model.full_attention_every=2"]}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_OVERRIDES))
def test_a_family_trains_from_scratch_and_exports_as_itself(family: str, tiny_data: Path, tmp_path: Path) -> None:
    config = tiny_config(f"model.family={family}", *FAMILY_OVERRIDES[family], "train.max_steps=4",
                         "train.eval_every=4", "train.save_every=4")
    train(TrainOptions(config=config, data=tiny_data, out=tmp_path / "run", show_progress=False), Console(quiet=True))
    run = load_run(tmp_path / "run")
    assert run.config.model.family == family
    report = check_model(run)
    assert all(check.passed for check in report.checks), [(check.name, check.detail) for check in report.checks]
    assert any(check.name == "KV cache equals full forward" for check in report.checks)

    hf_model = transformers.AutoModelForCausalLM.from_pretrained(export_hf(tmp_path / "run", tmp_path / "hf")).eval()
    ids = torch.randint(0, run.config.model.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, run.model(ids), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_lora_fine_tune_of_an_imported_qwen3_merges_and_chats(tmp_path: Path, cogni_home: Path) -> None:
    glaive = shared_data("glaive_toolcall_en_demo.json")
    config = transformers.Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                      max_position_embeddings=1024, tie_word_embeddings=True)
    torch.manual_seed(0)
    hf_model = transformers.Qwen3ForCausalLM(config).eval()
    randomize(hf_model)
    base, _ = import_hf(save_checkpoint(hf_model, tmp_path / "hf"), tmp_path / "base")
    data = tmp_path / "glaive"
    prepare_chat(ChatPrepareOptions([MixEntry(str(glaive), format="sharegpt", count=40)], base / TOKENIZER,
                                    out=data), Console(quiet=True))
    env = {"COGNI_HOME": str(cogni_home)}
    trained = run_cli("train", "--data", str(data), "--init-from", str(base), "--out", str(tmp_path / "lora"),
                      "--lora", "--lora-rank", "4", "--max-steps", "4", "--set", "train.micro_batch_size=2",
                      "--set", "train.eval_every=4", "--set", "train.save_every=4", "--set", "train.eval_batches=1",
                      env=env)
    assert trained.returncode == 0, trained.stderr
    merged = run_cli("merge", str(base), str(tmp_path / "lora"), "--out", str(tmp_path / "merged"), env=env)
    assert merged.returncode == 0, merged.stderr
    assert load_run(tmp_path / "merged").config.model.family == "qwen3"
    chat = run_cli("chat", str(tmp_path / "merged"), "--prompt", "What is the weather in Paris?", "--json",
                   "--max-new-tokens", "8", "--temperature", "0", env=env)  # greedy: the same reply every run
    assert chat.returncode == 0, chat.stderr
    assert json.loads(chat.stdout)["generated_tokens"] > 0
    bench = run_cli("bench", str(tmp_path / "merged"), "-p", "32", "-n", "16", "-r", "1", "--json", env=env)
    assert bench.returncode == 0, bench.stderr
    exported = run_cli("export", str(tmp_path / "merged"), "--format", "hf", "--out", str(tmp_path / "export"),
                       env=env)
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "export" / "config.json").read_text())["architectures"] == ["Qwen3ForCausalLM"]

    # As a PEFT adapter on the exported Qwen3 base: q/k/v split at the heads' own width (head_dim 32, not 16).
    split = export_hf(tmp_path / "lora", tmp_path / "split", adapter=True)
    hf_adapted = PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(split / "base"), split / "adapter").eval()
    ids = torch.randint(0, 280, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf_adapted(ids).logits, load_run(tmp_path / "merged").model(ids), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_a_family_run_resumes_and_serves(tiny_data: Path, tmp_path: Path) -> None:
    """A Qwen 3 run stopped after its step-2 checkpoint resumes to step 4, and `cogni serve` answers the openai
    client in ChatML (a run trained here speaks our format)."""
    run = tmp_path / "run"
    settings = ("model.family=qwen3", *FAMILY_OVERRIDES["qwen3"], "train.save_every=2", "train.eval_every=0",
                "train.log_every=1")
    train(TrainOptions(config=tiny_config(*settings, "train.max_steps=2"), data=tiny_data, out=run,
                       show_progress=False), Console(quiet=True))
    assert latest_checkpoint(run).name == "step-00000002"
    train(TrainOptions(config=tiny_config(*settings, "train.max_steps=4"), data=tiny_data, out=run, resume=True,
                       show_progress=False), Console(quiet=True))
    assert latest_checkpoint(run).name == "step-00000004"
    assert sorted({row["step"] for row in read_metrics(run) if "train_loss" in row}) == [1, 2, 3, 4]
    assert load_run(run).config.model.family == "qwen3"

    served = load_served_model(run, "cpu")
    assert served.prompt_format is CHATML
    with running_server(served) as url:
        reply = OpenAI(base_url=f"{url}/v1", api_key="none").chat.completions.create(
            model=served.name, messages=[{"role": "user", "content": "Once upon a time"}], max_tokens=8)
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert isinstance(reply.choices[0].message.content, str)
