"""The README.md model card of an exported model, built from what the run dir recorded.

Everything in it comes from the run's config.json, trainer_state.json and metrics.jsonl, so a card never
claims a figure the run did not measure; a figure the run lacks is left out rather than guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cognimamba.config.schema import Config
from cognimamba.runs.metrics import read_metrics
from cognimamba.system.fileio import read_json


def _last(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The newest metrics row that has `key` (rows are appended in step order)."""
    for row in reversed(rows):
        if isinstance(row.get(key), int | float):
            return row
    return None


def read_training_record(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """trainer_state.json and metrics.jsonl rows, each empty when the run lacks it (an imported model)."""
    state_path = run / "trainer_state.json"
    state = read_json(state_path, "trainer state") if state_path.is_file() else {}
    has_metrics = (run / "metrics.jsonl").is_file()
    rows = [row for row in read_metrics(run) if isinstance(row, dict)] if has_metrics else []
    return state if isinstance(state, dict) else {}, rows


def _figure(value: float | None, digits: int = 4) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value not in (None, "")]
    return lines


def model_card(name: str, config: Config, run_info: dict[str, Any], state: dict[str, Any],
               metrics: list[dict[str, Any]], dtype_name: str, adapter_note: str | None = None) -> str:
    """Markdown with a YAML header the Hugging Face hub reads (library, pipeline, tags)."""
    model = config.model
    parameters = run_info.get("parameters") or {}
    data_meta = run_info.get("data_meta") or {}
    train_row, eval_row = _last(metrics, "train_loss"), _last(metrics, "val_loss")
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags:", "- cognimamba", "- llama", "- chatml", "- tool-calling", "---", "",
             f"# {name}", "",
             "A small Llama-architecture conversational model made with "
             "[cognimamba](https://pypi.org/project/cognimamba/). It loads with plain `transformers` "
             "(no custom code) and speaks ChatML with tool calls.", ""]
    if run_info.get("imported_from"):
        lines += [f"Imported into cognimamba from `{run_info['imported_from']}`.", ""]
    if adapter_note:
        lines += [adapter_note, ""]
    lines += ["## Architecture", ""]
    lines += _table([
        ("architecture", "LlamaForCausalLM (RoPE, RMSNorm, SwiGLU, grouped-query attention)"),
        ("parameters", f"{parameters['total']:,}" if "total" in parameters else None),
        ("non-embedding parameters", f"{parameters['non_embedding']:,}" if "non_embedding" in parameters else None),
        ("layers", model.n_layers), ("hidden size", model.dim), ("intermediate size", model.ffn_dim),
        ("attention heads / KV heads", f"{model.n_heads} / {model.n_kv_heads}"),
        ("context length", model.max_seq_len), ("vocabulary", f"{model.vocab_size:,} (byte-level BPE)"),
        ("RoPE theta", model.rope_theta), ("tied embeddings", "yes" if model.tie_embeddings else "no"),
        ("weights dtype", dtype_name),
    ])
    lines += ["", "## Data", ""]
    if data_meta:
        lines += _table([
            ("source", f"`{data_meta['source']}`" if data_meta.get("source") else None),
            ("format", data_meta.get("format")),
            ("train tokens", f"{data_meta['train_tokens']:,}" if "train_tokens" in data_meta else None),
            ("train documents", f"{data_meta['train_documents']:,}" if "train_documents" in data_meta else None),
            ("validation tokens", f"{data_meta['val_tokens']:,}" if "val_tokens" in data_meta else None),
        ])
    else:
        lines.append("The run does not record its training data.")
    lines += ["", "## Training", ""]
    if state or metrics:
        train = config.train
        elapsed = state.get("elapsed")
        lines += _table([
            ("profile", config.profile), ("steps", state.get("step")),
            ("tokens seen", f"{state['tokens_seen']:,}" if isinstance(state.get("tokens_seen"), int) else None),
            ("wall-clock time", f"{elapsed / 60:.1f} min" if isinstance(elapsed, int | float) else None),
            ("peak learning rate", train.lr), ("batch", f"{train.micro_batch_size} x {train.grad_accum_steps} "
                                                        f"x {model.max_seq_len} tokens"),
            ("precision", train.precision),
            ("final train loss", _figure(train_row["train_loss"]) if train_row else None),
            ("final validation loss", _figure(eval_row["val_loss"]) if eval_row else None),
            ("validation perplexity", _figure(eval_row.get("val_perplexity"), 2) if eval_row else None),
            ("validation bits per byte", _figure(eval_row.get("val_bits_per_byte"), 3) if eval_row else None),
            ("best validation loss", _figure(state.get("best_val_loss"))),
        ])
    else:
        lines.append("The run does not record its training (it was imported, not trained here).")
    lines += ["", "## Use", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
              f'model = AutoModelForCausalLM.from_pretrained("{name}")',
              'messages = [{"role": "user", "content": "Tell me a story."}]',
              "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
              "return_dict=True)",
              "output = model.generate(**prompt, max_new_tokens=100)",
              'print(tokenizer.decode(output[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True))',
              "```", "",
              "The chat template is ChatML; tool definitions go in the system turn inside `<tools>`, calls come "
              "back as `<tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>` and results go in a `tool` "
              "turn inside `<tool_response>`. Pass `tools=[...]` to `apply_chat_template`.", "",
              "## Limitations", "",
              "A small model trained on a small budget: expect fluent-looking but often wrong text. It has "
              "no safety tuning.", ""]
    return "\n".join(lines)
