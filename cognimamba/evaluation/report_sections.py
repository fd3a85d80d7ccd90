"""The report card's sections, each a list of Markdown lines from what a run dir records (report.py assembles them).

Every figure says where it comes from: config.json (the model, the data dir's meta, the provenance `train` records),
trainer_state.json (steps, tokens, time), metrics.jsonl (losses, tokens/s) and RUN/eval/ (saved evaluations).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cognimamba.evaluation.harness_results import metric_rows
from cognimamba.evaluation.saved_evals import SavedEval
from cognimamba.runs.layout import CONFIG, METRICS, STATE, TOKENIZER
from cognimamba.runs.metrics import read_metrics
from cognimamba.system.console import human_bytes, human_count

Lines = list[str]
RATES = (("turn-taking", "turn_taking_rate", "turns_taken", "turns"),
         ("tool call parses", "parse_rate", "parsed_calls", "tool_call_turns"),
         ("right tool", "name_rate", "right_names", "tool_call_turns"),
         ("right arguments", "args_rate", "right_args", "tool_call_turns"),
         ("no false call", "no_false_call_rate", "no_false_calls", "plain_turns"))


@dataclass
class RunRecord:
    """A run dir's records, read once: config.json, trainer_state.json and metrics.jsonl (each may be missing)."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, run: Path) -> RunRecord:
        run = Path(run)
        rows = [row for row in read_metrics(run) if isinstance(row, dict)] if (run / METRICS).is_file() else []
        return cls(run, _json_object(run / CONFIG), _json_object(run / STATE), rows)

    def section(self, name: str) -> dict[str, Any]:
        value = self.config.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def train_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "train_loss" in row]

    @property
    def val_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "val_loss" in row]


def _json_object(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s" if minutes \
        else f"{seconds}s"


def number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> Lines:
    """A Markdown table; a `|` inside a cell is escaped so it stays one cell."""
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)]


def provenance_section(record: RunRecord) -> Lines:
    """The command line, the code version and the machine, as `train` recorded them in config.json."""
    made = record.section("provenance")
    if not made:
        return ["## How it was made", "", "Not recorded: this run was trained before cognimamba recorded its "
                "command line and machine (cognimamba " + str(record.config.get("cognimamba_version", "?")) + ").", ""]
    code, machine = made.get("code", {}), made.get("machine", {})
    version = f"cognimamba {code.get('version', '?')}"
    if code.get("git_commit"):
        version += f", git {code['git_commit']}" + (" with uncommitted changes" if code.get("git_dirty") else "")
    device = str(machine.get("device", "?"))
    if machine.get("gpu_memory_bytes"):
        device += f", {human_bytes(machine['gpu_memory_bytes'])}" + (f", CUDA {machine['cuda']}" if machine.get("cuda")
                                                                      else "")
    world = made.get("world_size", 1)
    processes = f" × {world} processes" if isinstance(world, int) and world > 1 else ""
    return ["## How it was made", "",
            f"- **command**: `{made.get('command_line', '?')}`",
            f"- **code**: {version}",
            f"- **hardware**: {device}{processes}"
            + (f"; {machine.get('cpu_cores', '?')} CPU cores" if machine.get("device_type") == "cuda" else ""),
            f"- **software**: {machine.get('platform', '?')}, Python {machine.get('python', '?')}, "
            f"torch {machine.get('torch', '?')}",
            f"- **started**: {made.get('started', '?')}", ""]


def _tokenizer_kind(run: Path) -> str:
    model = _json_object(run / TOKENIZER).get("model")
    return str(model.get("type", "?")) if isinstance(model, dict) else "?"


def data_section(record: RunRecord) -> Lines:
    """The data dir the run trained on, from the meta `prepare` wrote (copied into config.json at train time)."""
    meta, data = record.section("data_meta"), record.section("data")
    lines = ["## Data", "", f"- **data dir**: `{data.get('path', '?')}`"]
    if meta.get("format") == "chat":
        sources = ", ".join(f"{entry.get('label', entry.get('source', '?'))} ({entry.get('weight', 1):g})"
                            for entry in meta.get("sources", []) if isinstance(entry, dict))
        lines += [f"- **conversations**: {sources or '?'}; {number(meta.get('train_conversations'))} train, "
                  f"{number(meta.get('val_conversations'))} held out",
                  f"- **tokens**: {number(meta.get('train_tokens'))} train "
                  f"({number(meta.get('trained_fraction'), 2)} of them in assistant replies, the ones trained on), "
                  f"{number(meta.get('val_tokens'))} val"]
    elif meta:
        lines += [f"- **source**: `{meta.get('source', '?')}`",
                  f"- **documents**: {number(meta.get('train_documents'))} train, "
                  f"{number(meta.get('val_documents'))} val",
                  f"- **tokens**: {number(meta.get('train_tokens'))} train, {number(meta.get('val_tokens'))} val "
                  f"({_bytes_per_token(meta)} bytes of text per token)"]
    vocab = meta.get("vocab_size", record.section("model").get("vocab_size"))
    lines += [f"- **tokenizer**: {_tokenizer_kind(record.path)}, {number(vocab)} tokens"
              + (f", hash {str(meta['tokenizer_hash'])[:12]}" if meta.get("tokenizer_hash") else ""), ""]
    return lines


def _bytes_per_token(meta: dict[str, Any]) -> str:
    tokens, text_bytes = meta.get("train_tokens"), meta.get("train_bytes")
    return f"{text_bytes / tokens:.2f}" if isinstance(tokens, int) and tokens and isinstance(text_bytes, int) else "?"


def model_section(record: RunRecord) -> Lines:
    model, parameters = record.section("model"), record.section("parameters")
    if model.get("arch") == "fixed_point":
        shape = f"fixed-point context model ({model.get('fixed_point_preset', '?')} preset)"
    else:
        pattern = model.get("layer_pattern") or "A" * int(model.get("n_layers", 0) or 0)
        mixers = "attention" if set(pattern) <= {"A"} else f"hybrid {pattern} (M = Mamba-2, A = attention)"
        shape = (f"{model.get('n_layers', '?')} layers ({mixers}), dim {model.get('dim', '?')}, "
                 f"{model.get('n_heads', '?')} heads ({model.get('n_kv_heads', '?')} key/value), "
                 f"FFN {model.get('ffn_dim', '?')}")
    lines = ["## Model", "",
             f"- **parameters**: {human_count(parameters.get('total', 0))} "
             f"({human_count(parameters.get('non_embedding', 0))} without the embedding)",
             f"- **shape**: {shape}",
             f"- **context**: {number(model.get('max_seq_len'))} tokens; vocabulary {number(model.get('vocab_size'))}"]
    if record.config.get("init_from"):
        lines.append(f"- **fine-tuned from**: `{record.config['init_from']}`")
    lora = record.section("lora")
    if lora:
        lines.append(f"- **LoRA**: rank {lora.get('rank', '?')}, alpha {lora.get('alpha', '?')}, "
                     f"on {', '.join(map(str, lora.get('targets', [])))}")
    return [*lines, ""]


def tokens_per_second(record: RunRecord) -> float | None:
    """The median over the log intervals (the first left out: it holds the warm-up and any compile)."""
    rates = [row["tokens_per_second"] for row in record.train_rows[1:] if isinstance(row.get("tokens_per_second"),
                                                                                     int | float)]
    return statistics.median(rates) if rates else None


def training_section(record: RunRecord, mfu: str, chart: Lines) -> Lines:
    train, state = record.section("train"), record.state
    tokens, elapsed = state.get("tokens_seen"), state.get("elapsed")
    overall = tokens / elapsed if isinstance(tokens, int) and isinstance(elapsed, int | float) and elapsed else None
    step_tokens = (int(train.get("micro_batch_size", 0)) * int(train.get("grad_accum_steps", 0))
                   * int(record.section("model").get("max_seq_len", 0)) * int(state.get("world_size", 1) or 1))
    last_train = record.train_rows[-1]["train_loss"] if record.train_rows else None
    lines = ["## Training", "",
             f"- **profile**: {record.config.get('profile', '?')}, {train.get('precision', '?')} precision, "
             f"{train.get('optimizer', 'adamw')} at lr {train.get('lr', '?')}",
             f"- **steps**: {number(state.get('step'))}, {human_count(step_tokens)} tokens each "
             f"(micro-batch {train.get('micro_batch_size', '?')} × {train.get('grad_accum_steps', '?')} "
             f"accumulated × {number(record.section('model').get('max_seq_len'))} tokens)",
             f"- **tokens**: {human_count(tokens or 0)} in {duration(elapsed)}",
             f"- **speed**: {human_count(tokens_per_second(record) or 0)} tokens/s while training "
             f"({human_count(overall or 0)} tokens/s overall, with validation and saving)",
             f"- **MFU**: {mfu}",
             f"- **loss**: train {number(last_train)} at the end"
             + (f", val {number(state.get('last_val_loss'))} (best {number(state.get('best_val_loss'))} at step "
                f"{state.get('best_step')})" if state.get("last_val_loss") is not None else ", no validation"),
             ""]
    return [*lines, *chart]


def held_out_section(record: RunRecord) -> Lines:
    """Held-out loss on the val split at each evaluation: loss, perplexity, bits per byte."""
    rows = record.val_rows
    if not rows:
        return ["### Held-out loss", "", "No validation ran (no val split, or validation was off).", ""]
    shown = rows if len(rows) <= 8 else [*rows[:3], *rows[-5:]]
    body = [(str(row.get("step", "?")), number(row.get("val_loss")), number(row.get("val_perplexity"), 2),
             number(row.get("val_bits_per_byte"))) for row in shown]
    return ["### Held-out loss (val split)", "",
            *table(("step", "val loss (nats/token)", "perplexity", "bits/byte"), body),
            *(["", f"({len(rows) - len(shown)} evaluations in between: metrics.jsonl has them all)"]
              if len(rows) > len(shown) else []), ""]


def chat_eval_lines(figures: dict[str, Any], title: str) -> Lines:
    rows = []
    for label, rate, count, total in RATES:
        if rate in figures:
            value = figures[rate]
            rows.append((label, number(value, 2), f"{figures.get(count, 0)}/{figures.get(total, 0)}"))
    source = f"Held-out conversations: `{figures['file']}`" if figures.get("file") else ""
    return [f"### {title}", "", *([source, ""] if source else []),
            *table(("figure", "rate", "count"), rows), ""]


def lm_eval_lines(saved: SavedEval) -> Lines:
    payload = saved.payload
    rows = [(row.task, row.metric + ("" if row.filter == "none" else f" ({row.filter})"), row.n_shot,
             number(row.value, 4), number(row.stderr, 4)) for row in metric_rows(payload)]
    settings = payload.get("settings", {})
    limit = f", limit {settings['limit']}" if isinstance(settings, dict) and settings.get("limit") else ""
    return [f"### lm-eval ({payload.get('date', '?')}, lm-eval {payload.get('lm_eval_version', '?')}{limit})", "",
            *table(("task", "metric", "shots", "value", "± stderr"), rows), "", f"From `{saved.path.name}`.", ""]


def bfcl_lines(saved: SavedEval) -> Lines:
    """BFCL per category (`cogni eval --bfcl`, evaluation/bfcl_results.py): accuracy and counts, the cases refused
    for context (BFCL scores a refused irrelevance case correct, so also the accuracy with them counted wrong)."""
    payload = saved.payload
    categories = payload.get("categories", {})
    rows = []
    for name, entry in categories.items() if isinstance(categories, dict) else []:
        entry = entry if isinstance(entry, dict) else {"accuracy": entry}
        counts = f"{entry['correct']}/{entry['total']}" if {"correct", "total"} <= set(entry) else ""
        rows.append((str(name), number(entry.get("accuracy")), counts, number(entry.get("refused_for_context")),
                     number(entry.get("accuracy_refused_as_wrong")), number(entry.get("mean_latency_seconds"), 2)))
    settings = payload.get("settings") if isinstance(payload.get("settings"), dict) else {}
    version = f", bfcl-eval {payload['bfcl_eval_version']}" if payload.get("bfcl_eval_version") else ""
    lines = [f"### BFCL ({payload.get('date', '?')}{version})", "",
             *table(("category", "accuracy", "correct", "refused for context", "accuracy, refused as wrong",
                     "s/case"), rows), ""]
    if isinstance(payload.get("seconds_per_case"), int | float):
        lines += [f"{number(payload.get('cases'))} cases, {payload['seconds_per_case']:.2f} s each"
                  + (f" ({settings['mode']} mode)" if settings.get("mode") else "") + ".", ""]
    return [*lines, f"From `{saved.path.name}`.", ""]


def evaluations_section(record: RunRecord, saved: list[SavedEval]) -> Lines:
    lines = ["## Evaluations", "", *held_out_section(record)]
    for entry in saved:
        if entry.kind == "chat-eval":
            lines += chat_eval_lines(entry.payload, f"Chat eval ({entry.payload.get('date', '?')})")
        elif entry.kind == "lm-eval":
            lines += lm_eval_lines(entry)
        elif entry.kind == "bfcl":
            lines += bfcl_lines(entry)
    if not any(entry.kind in ("chat-eval", "lm-eval", "bfcl") for entry in saved):
        lines += [f"No saved evaluations in `{record.path.name}/eval/` yet: `cogni eval {record.path} --tasks "
                  "arc_easy` scores lm-eval tasks there.", ""]
    return lines


def headline_rows(saved: list[SavedEval]) -> list[tuple[str, str]]:
    """The latest saved evaluation of each kind in a line or a few: for the table at the top."""
    latest = {entry.kind: entry for entry in saved}  # oldest first, so the newest of each kind stays
    rows = []
    if "lm-eval" in latest:
        for row in metric_rows(latest["lm-eval"].payload)[:6]:
            rows.append((f"lm-eval {row.task} {row.metric}", number(row.value, 4)))
    if "bfcl" in latest:
        categories = latest["bfcl"].payload.get("categories", latest["bfcl"].payload.get("scores", {}))
        for name, entry in list(categories.items())[:6] if isinstance(categories, dict) else []:
            rows.append((f"BFCL {name}", number(entry.get("accuracy") if isinstance(entry, dict) else entry)))
    if "chat-eval" in latest:
        figures = latest["chat-eval"].payload
        rows += [(f"chat eval: {label}", number(figures.get(rate), 2)) for label, rate, _, _ in RATES[:3]]
    return rows
