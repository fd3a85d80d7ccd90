"""What `cogni test-model` verifies about a run: structure, math, and held-out quality."""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console

from cognimamba.config.schema import ModelConfig
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.data.prepare import PrepareOptions, prepare_text
from cognimamba.data.sources import LOCAL_SUFFIXES
from cognimamba.errors import CogniError
from cognimamba.evaluation.bfcl_results import bfcl_line, bfcl_scores, latest_bfcl
from cognimamba.evaluation.tool_eval import load_eval_conversations, tool_eval
from cognimamba.inference.decoding import ChatModel, greedy_ids
from cognimamba.model.build import new_cache
from cognimamba.model.loss import EvalResult, evaluate_loss
from cognimamba.model.tokenizer import END_OF_TEXT, decode, encode
from cognimamba.model.transformer import num_parameters
from cognimamba.runs.loading import LoadedRun

SAMPLE_PROMPT = "Once upon a time"


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class ModelReport:
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append(Check(name, passed, detail))


def check_forward(loaded: LoadedRun, report: ModelReport) -> None:
    model = loaded.model
    ids = torch.randint(0, loaded.config.model.vocab_size, (2, min(16, loaded.config.model.max_seq_len)))
    with torch.no_grad():
        logits = model(ids)
    ok = logits.shape == (*ids.shape, loaded.config.model.vocab_size) and bool(torch.isfinite(logits).all())
    report.add("forward pass", ok, f"logits {tuple(logits.shape)}, finite={bool(torch.isfinite(logits).all())}")


def check_gradients(loaded: LoadedRun, report: ModelReport) -> None:
    model = loaded.model
    was_training = model.training
    # Eval mode turns off every dropout (the blocks' functional one, LoRA's nn.Dropout), which could zero a
    # path by chance; we ask whether gradients *can* flow, and they flow in eval mode alike.
    model.eval()
    ids = torch.randint(0, loaded.config.model.vocab_size, (2, min(16, loaded.config.model.max_seq_len) + 1))
    try:
        logits = model(ids[:, :-1])
        F.cross_entropy(logits.view(-1, logits.size(-1)), ids[:, 1:].reshape(-1)).backward()
        dead = [name for name, p in model.named_parameters()
                if p.requires_grad and (p.grad is None or not p.grad.any())]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    total = sum(1 for p in model.parameters() if p.requires_grad)
    report.add("gradients reach every parameter", not dead,
               f"{total - len(dead)}/{total} tensors" + (f"; none reach {', '.join(dead[:3])}" if dead else ""))


def check_kv_cache(loaded: LoadedRun, report: ModelReport) -> None:
    model = loaded.model
    length = min(24, loaded.config.model.max_seq_len)
    ids = torch.randint(0, loaded.config.model.vocab_size, (1, length))
    with torch.no_grad():
        full = model(ids)
        cache = new_cache(loaded.config.model, 1, length, device=ids.device, dtype=next(model.parameters()).dtype)
        half = length // 2
        steps = [model(ids[:, :half], cache=cache, start=0)]
        steps += [model(ids[:, i:i + 1], cache=cache, start=i) for i in range(half, length)]
        incremental = torch.cat(steps, dim=1)
    difference = float((full - incremental).abs().max())
    # Mamba-2 layers keep a conv and SSM state instead of keys and values, the fixed-point model one context
    # vector; the same comparison covers them.
    name = "KV cache and Mamba-2 state equal full forward" if loaded.config.model.has_mamba else \
        "KV cache equals full forward"
    if loaded.config.model.is_fixed_point:
        name = "context cache equals full forward"
    report.add(name, difference < 1e-4, f"max |difference| {difference:.2e}")


def eval_on_data(loaded: LoadedRun, data: DataDir, batch_size: int = 8) -> tuple[EvalResult, float | None]:
    if data.vocab_size != loaded.config.model.vocab_size:
        raise CogniError(f"{data.path}: tokenized with a vocab of {data.vocab_size}, the model has "
                         f"{loaded.config.model.vocab_size}; prepare it with --tokenizer {loaded.path}/tokenizer.json")
    split = "val" if data.has_split("val") else "train"
    windows = TokenWindows(data, split)
    result = evaluate_loss(loaded.model, windows.full_pass(batch_size, loaded.config.model.max_seq_len))
    return result, result.bits_per_byte(data.bytes_per_token(split))


def eval_on_text(loaded: LoadedRun, path: Path, batch_size: int = 8) -> tuple[EvalResult, float | None, dict[str, Any]]:
    """Held-out loss on a text file read exactly as `cogni prepare FILE` reads it, and the data dir's meta.

    The same documents (split at blank lines), each followed by <|endoftext|>, bits/byte over the documents'
    bytes: a model trained on prepared data is scored on the text it was taught to model, and `--eval-file F`
    equals `prepare --val F` then `--data`. Scoring the raw file instead makes every blank line a surprise.
    """
    path = Path(path)
    if not path.is_file():
        raise CogniError(f"{path}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    with tempfile.TemporaryDirectory(prefix="cogni-eval-", ignore_cleanup_errors=True) as scratch_name:
        scratch = Path(scratch_name)
        if path.suffix.lower() not in LOCAL_SUFFIXES:  # a .md or suffix-less file is plain text too
            path = Path(shutil.copyfile(path, scratch / "eval.txt"))
        loaded.tokenizer.save(str(scratch / "tokenizer.json"))
        options = PrepareOptions(source=str(path), val_fraction=0.0, tokenizer=scratch / "tokenizer.json",
                                 out=scratch / "data")
        data = prepare_text(options, Console(quiet=True)).data_dir
        result, bits = eval_on_data(loaded, data, batch_size)
    return result, bits, data.meta


def document_split(meta: dict, split: str) -> str | None:
    """How the evaluated file was cut into documents: the val file has its own rule since text data version 2
    (before, the training file's rule governed both)."""
    if split == "val":
        return meta.get("val_document_split", meta.get("document_split"))
    return meta.get("document_split")


def sample_text(loaded: LoadedRun, prompt: str = SAMPLE_PROMPT, max_new_tokens: int = 48) -> str:
    prompt_ids = encode(loaded.tokenizer, prompt)
    room = loaded.config.model.max_seq_len - len(prompt_ids) - 1
    ids = greedy_ids(loaded.model, prompt_ids, max(0, min(max_new_tokens, room)))
    end = loaded.tokenizer.token_to_id(END_OF_TEXT)
    if end in ids:
        ids = ids[:ids.index(end)]
    return prompt + decode(loaded.tokenizer, ids)


def eval_chat_data(loaded: LoadedRun, path: Path, report: ModelReport) -> None:
    """Loss on the assistant tokens only (the data dir's loss mask), as fine-tuning measures it."""
    data = DataDir.open(path)
    if not data.has_mask:
        raise CogniError(f"{path}: has no loss mask, so it is not chat data; prepare it with --format or --mix")
    result, _ = eval_on_data(loaded, data)
    report.metrics.update({"chat_val_loss": result.loss, "chat_perplexity": result.perplexity,
                           "chat_eval_tokens": result.tokens, "chat_data": str(path)})
    report.add("chat loss (assistant tokens)", math.isfinite(result.loss),
               f"loss {result.loss:.4f}, perplexity {result.perplexity:.2f} on {result.tokens:,} trained tokens "
               f"of {path}")


def eval_tool_calls(loaded: LoadedRun, path: Path, format: str | None, report: ModelReport) -> None:

    result = tool_eval(ChatModel.from_run(loaded), load_eval_conversations(path, format))
    report.metrics.update(result.metrics())
    scored = result.tool_turns + result.plain_turns
    detail = result.summary() if scored else (f"no reference reply of {path} fits the context "
                                              f"({loaded.config.model.max_seq_len} tokens) after its prompt")
    report.add("tool-call eval", scored > 0, f"{detail} on {path}")
    report.metrics["tool_eval_examples"] = result.examples


def report_saved_bfcl(loaded: LoadedRun, report: ModelReport) -> None:
    """What `cogni eval --bfcl` last measured on the run, if it ran: shown, not re-measured (it takes minutes)."""
    saved = latest_bfcl(loaded.path)
    if saved is None:
        return
    path, summary = saved
    report.metrics["bfcl"] = {"file": str(path), "date": summary.get("date"), "scores": bfcl_scores(summary),
                              "refused_for_context": summary.get("refused_for_context", 0)}
    report.add("BFCL (latest cogni eval --bfcl)", True, f"{bfcl_line(summary)} ({path.name})")


def shape_summary(config: ModelConfig) -> str:
    if config.is_fixed_point:
        layers, context_dim, hidden_dim = config.fixed_point_shape
        return f"fixed-point context model ({layers} updater layers, context {context_dim}, hidden {hidden_dim})"
    return f"{config.n_layers} layers x {config.dim}"


def test_model(loaded: LoadedRun, data: Path | None = None, eval_file: Path | None = None,
               chat_data: Path | None = None, tool_eval_file: Path | None = None,
               tool_format: str | None = None) -> ModelReport:
    report = ModelReport()
    config = loaded.config.model
    total, non_embedding = num_parameters(loaded.model)
    report.metrics.update({"parameters": total, "non_embedding_parameters": non_embedding})
    report.add("config, tokenizer and weights agree", True,
               f"vocab {config.vocab_size}, {shape_summary(config)}, {total:,} parameters")
    check_forward(loaded, report)
    check_gradients(loaded, report)
    check_kv_cache(loaded, report)
    result: EvalResult | None = None
    if eval_file is not None:
        result, bits, meta = eval_on_text(loaded, eval_file)
        source = str(eval_file)
    else:
        data_path = data or (Path(loaded.config.data.path) if loaded.config.data.path else None)
        if data_path is not None and (data is not None or data_path.is_dir()):
            prepared = DataDir.open(data_path)
            result, bits = eval_on_data(loaded, prepared)
            source, meta = str(data_path), prepared.meta
    if result is not None:
        ok = math.isfinite(result.loss)
        split = "val" if meta.get("val_tokens") else "train"
        report.metrics.update({"val_loss": result.loss, "perplexity": result.perplexity, "bits_per_byte": bits,
                               "eval_tokens": result.tokens, "eval_source": source,
                               "eval_documents": meta.get(f"{split}_documents"),
                               "eval_document_split": document_split(meta, split)})
        detail = f"loss {result.loss:.4f}, perplexity {result.perplexity:.2f}"
        if bits is not None:
            detail += f", {bits:.3f} bits/byte"
        report.add("held-out loss", ok, f"{detail} on {result.tokens:,} tokens of {source}")
    if chat_data is not None:
        eval_chat_data(loaded, chat_data, report)
    if tool_eval_file is not None:
        eval_tool_calls(loaded, tool_eval_file, tool_format, report)
    report_saved_bfcl(loaded, report)
    sample = sample_text(loaded)
    report.metrics["sample"] = sample
    report.add("greedy sample", len(sample) > len(SAMPLE_PROMPT), repr(sample[:120]))
    return report


__all__ = ["ModelReport", "test_model"]
