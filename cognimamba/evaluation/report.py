"""A run's report card: RUN/report.md, the whole story of a run on one page, with its loss curves beside it as a PNG.

nanochat's report.md is the anchor: how it was made (command, code, machine), the data, the model, training
(steps, tokens, time, tokens/s, MFU), every evaluation the run has and a sample. Written at the end of `cogni train`,
`cogni quickstart` and `cogni recipe chat`; `cogni report RUN` writes it again (after `cogni eval`, say). It reads
only what the run dir records, so it describes the run, not the machine that writes the report.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from cognimamba.chat.format import render_conversation
from cognimamba.errors import CogniError
from cognimamba.evaluation.checks import sample_text
from cognimamba.evaluation.plot import render_png
from cognimamba.evaluation.report_sections import (
    Lines,
    RunRecord,
    data_section,
    duration,
    evaluations_section,
    headline_rows,
    model_section,
    number,
    provenance_section,
    table,
    tokens_per_second,
    training_section,
)
from cognimamba.evaluation.saved_evals import SavedEval, saved_evals
from cognimamba.inference.decoding import greedy_ids
from cognimamba.model.build import training_flops_per_token
from cognimamba.model.linear import measure_matmul_peak
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, decode, encode
from cognimamba.runs.layout import CONFIG
from cognimamba.runs.loading import LoadedRun, load_run, read_config
from cognimamba.system.fileio import atomic_write_text
from cognimamba.system.hardware import intra_op_threads, pick_dtype
from cognimamba.system.version import VERSION

REPORT_FILE = "report.md"
LOSS_PNG = "report_loss.png"
PLOT_HINT = ("The loss curves as a PNG need matplotlib: `pip install 'cognimamba[plot]'`, then "
             "`cogni report {run}` draws them here.")
SAMPLE_TOKENS = 48  # enough to read, cheap on any CPU
CHAT_SAMPLE_PROMPT = "Hello! What is 12 times 7?"


def write_report(run: Path, sample: bool = True) -> Path:
    """RUN/report.md (and RUN/report_loss.png where matplotlib is installed); the path of the report."""
    run = Path(run)
    if not (run / CONFIG).is_file():
        raise CogniError(f"{run}: no {CONFIG}, so not a run dir to report on")
    atomic_write_text(run / REPORT_FILE, run_report(run, sample=sample))
    return run / REPORT_FILE


def write_report_safely(run: Path, console: Console, sample: bool = True) -> Path | None:
    """The report after training: whatever goes wrong is one yellow line, never a failed run."""
    return write_safely(lambda: write_report(run, sample=sample), console)


def write_safely(write: Callable[[], Path], console: Console) -> Path | None:
    """Call `write` (a report writer): an error is one yellow line, since what it reports on is done and saved."""
    try:
        path = write()
    except Exception as error:  # the run is done and saved; its report must not undo that
        console.print(f"[yellow]report.md not written: {escape(type(error).__name__)}: {escape(str(error))}[/]",
                      highlight=False, soft_wrap=True)
        return None
    console.print(f"report card: {path}", highlight=False, soft_wrap=True)
    return path


def run_report(run: Path, sample: bool = True, nested: bool = False) -> str:
    """The report as Markdown. `nested`: a section of a recipe's report (in the folder above the run), without its
    own title and provenance (the recipe shows those once), every heading one level down."""
    record, saved = RunRecord.read(run), saved_evals(run)
    chart = loss_chart(record, f"{run.name}/" if nested else "")
    body = [*data_section(record), *model_section(record), *training_section(record, mfu_text(record), chart),
            *evaluations_section(record, saved), *(sample_section(run, record) if sample else [])]
    if nested:
        return "\n".join("#" + line if line.startswith("#") else line for line in
                         [*summary_table(record, saved), "", *body]).rstrip() + "\n"
    lines = [f"# Report card: {run.name}", "",
             f"`{run}`, written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by cognimamba {VERSION}. "
             "Every figure below is read from the run dir.", "",
             *summary_table(record, saved), "", *provenance_section(record), *body]
    return "\n".join(lines).rstrip() + "\n"


def summary_table(record: RunRecord, saved: list[SavedEval]) -> Lines:
    """The figures people compare first, in one table at the top: size, training, held-out loss, the latest of
    each saved evaluation."""
    state, parameters = record.state, record.section("parameters")
    elapsed = state.get("elapsed")
    last_val = record.val_rows[-1] if record.val_rows else {}
    rows = [("parameters", number(parameters.get("total"))),
            ("steps", number(state.get("step"))),
            ("tokens trained", number(state.get("tokens_seen"))),
            ("training time", duration(elapsed if isinstance(elapsed, int | float) else None)),
            ("val loss (nats/token)", number(last_val.get("val_loss"))),
            ("val bits/byte", number(last_val.get("val_bits_per_byte"))), *headline_rows(saved)]
    return table(("figure", "value"), rows)


def mfu_text(record: RunRecord) -> str:
    """MFU: logged by training where metrics.jsonl has it; else the run's tokens/s against the matmul peak of
    this machine, measured now, when this is the machine that trained it (the provenance says which)."""
    logged = [row["mfu"] for row in record.train_rows[1:] if isinstance(row.get("mfu"), int | float)]
    if logged:
        return f"{sum(logged) / len(logged):.1%} (mean over the logged intervals)"
    machine = record.section("provenance").get("machine", {})
    rate = tokens_per_second(record)
    if not machine or rate is None:
        return "not recorded"
    device = torch.device(machine.get("device_type", "cpu"))
    if not same_machine(machine, device):
        return f"not measured: the matmul peak is measured on the machine that trained ({machine.get('device')})"
    config, _ = read_config(record.path)
    with intra_op_threads(machine.get("threads") if device.type == "cpu" else None):
        peak = measure_matmul_peak(device, pick_dtype(config.train.precision, device), seconds=0.25)
    flops = training_flops_per_token(config.model, config.model.max_seq_len)
    mfu = flops * rate / int(record.state.get("world_size", 1) or 1) / peak
    return f"{mfu:.1%} (training tokens/s against this machine's matmul peak, measured for the report)"


def same_machine(machine: dict, device: torch.device) -> bool:
    """Whether this is the hardware the provenance names: the same GPU, or as many CPU cores on the same system."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_name(device) == machine.get("gpu")
    return machine.get("cpu_cores") == os.cpu_count() and machine.get("platform") == platform.platform(terse=True)


def loss_chart(record: RunRecord, link_prefix: str = "") -> Lines:
    """The loss curves as RUN/report_loss.png, linked from the report (through `link_prefix` from a recipe's);
    without matplotlib, one line on how to get it."""
    train = [(int(row["step"]), float(row["train_loss"])) for row in record.train_rows]
    val = [(int(row["step"]), float(row["val_loss"])) for row in record.val_rows]
    if not train and not val:
        return ["No loss rows in metrics.jsonl yet.", ""]
    try:
        import matplotlib  # noqa: F401, PLC0415 (optional: cognimamba[plot]; only asked whether it is there)
    except ImportError:
        return [PLOT_HINT.format(run=record.path), ""]
    render_png(train, val, record.path / LOSS_PNG, title=f"{record.path.name}: loss")
    return [f"![train and val loss against step]({link_prefix}{LOSS_PNG})", ""]


def greedy_sample(loaded: LoadedRun, chat: bool, max_new_tokens: int = SAMPLE_TOKENS) -> tuple[str, str]:
    """(prompt, continuation): a story opening for a text run, a user turn in ChatML for a chat run."""
    if not chat:
        text = sample_text(loaded, max_new_tokens=max_new_tokens)
        return text[:len("Once upon a time")], text[len("Once upon a time"):]
    prompt = render_conversation([{"role": "user", "content": CHAT_SAMPLE_PROMPT}], add_generation_prompt=True)
    prompt_ids = encode(loaded.tokenizer, prompt)
    room = loaded.config.model.max_seq_len - len(prompt_ids) - 1
    ids = greedy_ids(loaded.model, prompt_ids, max(0, min(max_new_tokens, room)))
    stops = {loaded.tokenizer.token_to_id(END_OF_TEXT), loaded.tokenizer.token_to_id(IM_END)}
    cut = next((index for index, token in enumerate(ids) if token in stops), len(ids))
    return CHAT_SAMPLE_PROMPT, decode(loaded.tokenizer, ids[:cut])


def sample_section(run: Path, record: RunRecord) -> Lines:
    chat = record.section("data_meta").get("format") == "chat"
    try:
        prompt, continuation = greedy_sample(load_run(run), chat)
    except Exception as error:  # a run that cannot load still gets the rest of its report
        return ["## Sample", "", f"Skipped: the run did not load ({type(error).__name__}: {error}).", ""]
    fence = "~~~~"  # the model may write ``` itself; one element, so nesting never shifts a "#" the model wrote
    if chat:
        reply = continuation.strip() or "(an empty reply: only whitespace before the end of its turn)"
        return ["## Sample (greedy, chat)", "", f"**user**: {prompt}", "", "**assistant** "
                f"(up to {SAMPLE_TOKENS} tokens):", "", f"{fence}\n{reply}\n{fence}", ""]
    return [f"## Sample (greedy, up to {SAMPLE_TOKENS} tokens)", "", f"{fence}\n{prompt}{continuation}\n{fence}", "",
            f"The prompt is \"{prompt}\"; the rest is the model's.", ""]
