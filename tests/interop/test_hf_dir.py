"""`cogni export --format hf`: transformers loads the directory and computes what we compute."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from cognimamba.chat.format import render_conversation
from cognimamba.inference.decoding import Decoder, greedy_ids
from cognimamba.interop.hf_dir import export_hf
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, SPECIAL_TOKENS, encode
from cognimamba.runs.loading import load_run
from tests.conftest import run_cli
from tests.float_bounds import assert_within, logits_bound
from tests.interop.fixtures import PROMPTS, make_run

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Météo d'une ville — «vite»",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"name": "add", "description": "add two <numbers> & more", "parameters": {"type": "object", "properties": {}}},
]
CONVERSATIONS = [
    ([{"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "tool_calls": [
          {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris é"}}}]},
      {"role": "tool", "content": '{"temp_c": 18}'},
      {"role": "assistant", "content": "It is 18°C in Paris."}], TOOLS),
    ([{"role": "user", "content": "Add twice."},
      {"role": "assistant", "content": "Sure.", "tool_calls": [
          {"name": "add", "arguments": {"a": 1, "b": [2, 3]}},
          {"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 5}'}},
          {"name": "add"}]},
      {"role": "tool", "content": "3"}, {"role": "tool", "content": "7"}], TOOLS),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Again"}], None),
    ([{"role": "system", "content": ""}, {"role": "user", "content": "x"}], None),
    ([{"role": "user", "content": "no system, tools"}], TOOLS),
    ([{"role": "user", "content": "empty tools"}], []),
    ([{"role": "user", "content": "Null arguments."},  # both write {} for them
      {"role": "assistant", "content": "", "tool_calls": [
          {"name": "add", "arguments": None}, {"type": "function", "function": {"name": "add", "arguments": None}}]}],
     TOOLS),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Runs with tied and untied embeddings, each exported to a transformers directory."""
    root = tmp_path_factory.mktemp("export_hf")
    result = {}
    for tie in ("true", "false"):
        run = make_run(root / f"run-{tie}", f"model.tie_embeddings={tie}", seed=1 if tie == "true" else 2)
        result[tie] = (run, export_hf(run, root / f"hf-{tie}"))
    return result


def load_hf(directory: Path) -> tuple[torch.nn.Module, object]:
    model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    return model, tokenizer


def until_stop(ids: list[int], stop: set[int]) -> list[int]:
    for index, token in enumerate(ids):
        if token in stop:
            return ids[:index]
    return ids


def test_an_exported_top_p_of_zero_samples_like_ours(tmp_path: Path) -> None:
    """transformers keeps the likeliest token at top_p 0 (min_tokens_to_keep); `cogni chat` must do the same."""
    run_path = make_run(tmp_path / "run", "generation.temperature=1.0", "generation.top_k=0", "generation.top_p=0",
                        seed=3)
    hf_dir = export_hf(run_path, tmp_path / "hf")
    assert json.loads((hf_dir / "generation_config.json").read_text())["top_p"] == 0.0
    run = load_run(run_path)
    hf_model, _ = load_hf(hf_dir)
    stop = {run.tokenizer.token_to_id(END_OF_TEXT), run.tokenizer.token_to_id(IM_END)}
    ids = encode(run.tokenizer, PROMPTS[0])
    torch.manual_seed(0)
    output = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=24)  # sampling as generation_config.json says
    theirs = until_stop(output[0, len(ids):].tolist(), stop)
    settings = dataclasses.replace(run.config.generation, max_new_tokens=24, seed=0)
    ours = until_stop(list(Decoder(run.model, run.tokenizer).stream_ids(ids, settings)), stop)
    assert len(theirs) > 3
    assert ours == theirs == until_stop(greedy_ids(run.model, ids, 24), stop)


@pytest.mark.parametrize("tie", ["true", "false"])
def test_transformers_logits_and_greedy_match(exported: dict[str, tuple[Path, Path]], tie: str) -> None:
    run_path, hf_dir = exported[tie]
    run = load_run(run_path)
    hf_model, _ = load_hf(hf_dir)
    assert type(hf_model).__name__ == "LlamaForCausalLM"
    assert hf_model.config.tie_word_embeddings == (tie == "true")
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, run.config.model.vocab_size, (3, 48), generator=generator)
    with torch.no_grad():
        ours, theirs = run.model(batch), hf_model(batch).logits
    assert ours.abs().max() > 1.0  # a real, non-flat distribution
    # transformers computes the same sums in its own order (and kernels): within the forward's rounding bound.
    assert_within(theirs, ours, logits_bound(run.model, batch))

    stop = {run.tokenizer.token_to_id(END_OF_TEXT), run.tokenizer.token_to_id(IM_END)}
    for prompt in PROMPTS:
        ids = encode(run.tokenizer, prompt)
        row = torch.tensor([ids])
        with torch.no_grad():
            assert_within(hf_model(row).logits, run.model(row), logits_bound(run.model, row))
        ours_greedy = until_stop(greedy_ids(run.model, ids, 24), stop)
        output = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=24, do_sample=False)
        theirs_greedy = until_stop(output[0, len(ids):].tolist(), stop)
        assert len(ours_greedy) > 3
        assert theirs_greedy == ours_greedy


def test_tokenizer_and_config_files(exported: dict[str, tuple[Path, Path]]) -> None:
    run_path, hf_dir = exported["false"]
    run = load_run(run_path)
    _, hf_tokenizer = load_hf(hf_dir)
    texts = [*PROMPTS, render_conversation(*CONVERSATIONS[0], add_generation_prompt=True), "  spaces\n\ttabs 😀"]
    for text in texts:
        ids = encode(run.tokenizer, text)
        assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
        assert hf_tokenizer(text)["input_ids"] == ids  # no BOS/EOS added behind the user's back
        assert hf_tokenizer.decode(ids) == text
    assert hf_tokenizer.eos_token == IM_END and hf_tokenizer.bos_token == END_OF_TEXT
    assert set(SPECIAL_TOKENS) <= set(hf_tokenizer.all_special_tokens)

    config = json.loads((hf_dir / "config.json").read_text())
    model = run.config.model
    assert (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["num_hidden_layers"], config["max_position_embeddings"]) == (
        model.dim, model.ffn_dim, model.n_heads, model.n_kv_heads, model.n_layers, model.max_seq_len)
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == model.rope_theta
    assert config["rms_norm_eps"] == model.norm_eps
    assert config["eos_token_id"] == run.tokenizer.token_to_id(IM_END)
    generation = json.loads((hf_dir / "generation_config.json").read_text())
    assert set(generation["eos_token_id"]) == {run.tokenizer.token_to_id(IM_END),
                                               run.tokenizer.token_to_id(END_OF_TEXT)}
    weights = load_file(hf_dir / "model.safetensors")
    assert "model.layers.1.self_attn.k_proj.weight" in weights and "lm_head.weight" in weights
    assert not any("qkv" in name or "gate_up" in name for name in weights)


@pytest.mark.parametrize(("messages", "tools"), CONVERSATIONS)
def test_chat_template_renders_like_chat_format(exported: dict[str, tuple[Path, Path]], messages: list,
                                                tools: list | None) -> None:
    _, hf_tokenizer = load_hf(exported["true"][1])
    for add_generation_prompt in (False, True):
        theirs = hf_tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)
        assert theirs == render_conversation(messages, tools, add_generation_prompt)


def test_chat_template_refuses_a_late_system_turn(exported: dict[str, tuple[Path, Path]]) -> None:
    _, hf_tokenizer = load_hf(exported["true"][1])
    messages = [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]
    with pytest.raises(ValueError):
        render_conversation(messages)
    with pytest.raises(Exception, match="unsupported role system"):
        hf_tokenizer.apply_chat_template(messages, tokenize=False)


def test_half_precision_exports(exported: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    run_path, _ = exported["true"]
    run = load_run(run_path)
    export_hf(run_path, tmp_path / "bf16", dtype="bf16")
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert all(tensor.dtype == torch.bfloat16 for tensor in weights.values())
    assert torch.equal(weights["model.embed_tokens.weight"], run.model.tok_embeddings.weight.detach().bfloat16())
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    embedding = hf_model.get_input_embeddings().weight.detach()
    assert torch.equal(embedding, run.model.tok_embeddings.weight.detach().bfloat16().to(embedding.dtype))


@pytest.mark.slow
def test_cli_export_of_a_trained_run_writes_a_model_card(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = run_cli("export", str(tiny_run), "--format", "hf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    card = (out / "README.md").read_text()
    state = json.loads((tiny_run / "trainer_state.json").read_text())
    assert "library_name: transformers" in card
    assert f"| steps | {state['step']} |" in card
    assert f"{state['best_val_loss']:.4f}" in card
    assert "| layers | 2 |" in card and "| hidden size | 64 |" in card
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert "<tool_call>" in tokenizer_config["chat_template"]

    again = run_cli("export", str(tiny_run), "--format", "hf", "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    assert run_cli("export", str(tiny_run), "--format", "hf", "--out", str(out), "--force").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize(("override", "named"), [("model.qk_norm=true", "qk_norm"),
                                                 ("model.sliding_window=16", "sliding_window")])
def test_options_llama_lacks_are_refused_by_name(tmp_path: Path, override: str, named: str) -> None:
    run = make_run(tmp_path / "run", override)
    result = run_cli("export", str(run), "--format", "hf", "--out", str(tmp_path / "hf"))
    assert result.returncode == 2
    assert named in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "hf").exists()


@pytest.mark.slow
def test_bad_options_are_one_line_errors(exported: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    run_path, _ = exported["true"]
    for args, message in [(["--format", "onnx"], "--format"), (["--format", "hf", "--dtype", "q4"], "--dtype"),
                          (["--format", "hf", "--adapter"], "not a LoRA run"),
                          (["--format", "hf", "--merged", "--adapter"], "exclude each other")]:
        result = run_cli("export", str(run_path), "--out", str(tmp_path / "x"), *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    result = run_cli("export", str(run_path), "--format", "hf", "--out", str(run_path), "--force")
    assert result.returncode == 2 and "would replace the run" in result.stderr
    assert (run_path / "model.safetensors").is_file()


# --- LoRA runs: exported merged, or as the base plus a PEFT adapter under Llama module names ---------------------


def lora_run(base: Path, out: Path, target_modules: list[str] | str) -> Path:
    """A LoRA run dir in the runs/layout.py layout, with random (clearly non-zero) adapter weights."""
    from peft import LoraConfig, get_peft_model

    from cognimamba.runs.layout import ADAPTER_WEIGHTS
    from cognimamba.runs.loading import write_run_files
    from cognimamba.runs.lora import LoraSettings, adapter_state, lora_run_info, write_adapter_config
    from cognimamba.runs.tensors import save_weights

    loaded = load_run(base)
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=target_modules))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    targets = tuple(target_modules) if isinstance(target_modules, list) else ("qkv",)
    write_run_files(out, loaded.config, peft_model.get_base_model(), loaded.tokenizer,
                    {"lora": lora_run_info(LoraSettings(4, 8.0, 0.0, targets), base)})
    write_adapter_config(out, peft_model, str(base.resolve()))
    save_weights(out / ADAPTER_WEIGHTS, adapter_state(peft_model))
    return out


@pytest.mark.parametrize("target_modules", [["qkv", "proj", "gate_up", "down"], r"layers\.1\.attention\.qkv"],
                         ids=["all-modules", "qkv-of-layer-1"])
def test_lora_run_exports_merged_or_as_peft_adapter(exported: dict[str, tuple[Path, Path]], tmp_path: Path,
                                                   target_modules: list[str] | str) -> None:
    from peft import PeftModel

    base_run, _ = exported["false"]
    adapter_run = lora_run(base_run, tmp_path / "lora", target_modules)
    tuned = load_run(adapter_run).model  # run_dir merges the adapter with peft: the reference
    plain = load_run(base_run).model
    batch = torch.randint(0, plain.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = tuned(batch)
        assert (expected - plain(batch)).abs().max() > 0.1  # the adapter really changes the model

    split = export_hf(adapter_run, tmp_path / "split", adapter=True)
    assert (split / "base" / "model.safetensors").is_file() and (split / "adapter" / "adapter_config.json").is_file()
    adapter_config = json.loads((split / "adapter" / "adapter_config.json").read_text())
    if isinstance(target_modules, str):
        assert adapter_config["target_modules"] == [f"model.layers.1.self_attn.{p}_proj" for p in "kqv"]
    else:
        assert sorted(adapter_config["target_modules"]) == sorted(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert "auto_mapping" not in adapter_config
    hf_base, _ = load_hf(split / "base")
    hf_adapted = PeftModel.from_pretrained(hf_base, split / "adapter").eval()
    with torch.no_grad():
        got = hf_adapted(batch).logits
    bound = logits_bound(tuned, batch)  # peft adds B(Ax) to Wx; the merged run sums (W + BA)x: another order
    assert_within(got, expected, bound)

    merged = export_hf(adapter_run, tmp_path / "merged")
    hf_merged, _ = load_hf(merged)
    with torch.no_grad():
        assert_within(hf_merged(batch).logits, expected, bound)
    assert "merged into the weights" in (merged / "README.md").read_text()
