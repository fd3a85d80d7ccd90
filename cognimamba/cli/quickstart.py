"""The main job on a built-in default, offline: stories -> data dir -> cpu-profile run -> checks -> sample;
with --chat: procedural conversations -> tokenizer + chat data dir -> cpu-profile run -> chat eval."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from cognimamba.chat.format import render_conversation
from cognimamba.config.overrides import resolve_config
from cognimamba.config.schema import Config, set_field, validate
from cognimamba.data.chat_sources import SYNTHETIC_CHAT
from cognimamba.data.loader import TokenWindows
from cognimamba.data.prepare import PrepareOptions, prepare_text
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.data.synthetic.chat import GENERATOR_VERSION, generate_conversations, write_conversations
from cognimamba.data.synthetic.stories import STORY_SEPARATOR, write_story_corpus
from cognimamba.evaluation.chat_eval import eval_chat_turns
from cognimamba.evaluation.checks import ModelReport, test_model
from cognimamba.evaluation.report import write_report_safely
from cognimamba.evaluation.saved_evals import save_chat_eval
from cognimamba.evaluation.tool_eval import load_eval_conversations
from cognimamba.model.tokenizer import TOKENIZER_SPLIT, train_tokenizer, unmark
from cognimamba.runs.loading import load_run
from cognimamba.system.console import make_progress
from cognimamba.system.fileio import atomic_write_text
from cognimamba.system.paths import cache_dir, default_runs_dir
from cognimamba.train.entry import UNBOUNDED_STEPS, TrainOptions, train

# The chat model beyond the cpu profile. Tool arguments are copied from the user's message ("12 times 7" ->
# "12 * 7"), and copying is what a small model learns last: in 5 CPU-minutes no all-attention model copied a
# calculator argument (the cpu profile's 5.4M, nor 1M at three times the steps), while this 1M hybrid (Mamba-2,
# attention, Mamba-2, attention) did, with a far lower val loss (benchmarks/README.md, "The chat quickstart").
# Also: a context that holds the tool definitions and a few turns, a micro-batch of 4 (more steps in the same
# minutes), no dropout (the procedural data is plentiful), a warmup short enough for a few minutes' steps. GGUF
# and HF export need an all-attention model; `cogni recipe chat` trains one.
CHAT_SETTINGS = ["model.max_seq_len=512", "model.dim=128", "model.n_layers=4", "model.layer_pattern=MAMA",
                 "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=384", "train.micro_batch_size=4",
                 "model.dropout=0.0", "train.warmup_steps=30", "generation.temperature=0.2"]
CHAT_VOCAB = 4096
CHAT_TRAIN_SEED, CHAT_HELD_OUT_SEED = 0, 1


def run_quickstart(data: str | None, max_time: str, out: Path | None, stories: int, console: Console) -> Path:
    console.rule("[bold]cogni quickstart")
    if data is None:
        corpus = cache_dir() / "quickstart" / f"stories-{stories}.txt"
        if not corpus.is_file():
            console.print(f"1/4 writing {stories} procedural stories to {corpus}")
            write_story_corpus(corpus, stories, seed=0)
        source, separator = str(corpus), STORY_SEPARATOR.strip()
    else:
        source, separator = data, None
    console.print("2/4 preparing the corpus (tokenizer + token shards)")
    prepared = prepare_text(PrepareOptions(source=source, separator=separator, vocab_size=4096), console)
    console.print(f"    data dir: {prepared.data_dir.path}")
    config = _timed_config([], max_time)
    run = out or default_runs_dir() / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    console.print(f"3/4 training the cpu profile for {max_time}")
    result = train(TrainOptions(config=config, data=prepared.data_dir.path, out=run), console)
    console.print("4/4 checking the model")
    report = test_model(load_run(run))
    for check in report.checks:
        mark = "[green]ok[/]" if check.passed else "[red]FAIL[/]"
        console.print(f"    {mark} {check.name}: {check.detail}", highlight=False)
    bits = report.metrics.get("bits_per_byte")
    summary = f"val loss {result.val_loss:.3f}" if result.val_loss is not None else "no val loss"
    if bits:
        summary += f", {bits:.3f} bits/byte"
    console.print(Panel(f"{report.metrics['sample']}", title="sample (greedy)", expand=False))
    console.print(f"[green]done[/]: {result.step} steps, {summary}. Run dir: {run}\n"
                  f"Talk to it:  cogni chat {run}\nCheck it:    cogni test-model {run}", highlight=False)
    write_report_safely(run, console)
    return run


def _timed_config(settings: list[str], max_time: str) -> Config:
    config = resolve_config("cpu", None, settings)
    set_field(config, "train.max_time", max_time, "--max-time")
    config.train.max_steps = UNBOUNDED_STEPS
    validate(config)
    return config


def _chat_tokenizer(conversations: int, console: Console) -> Path:
    """A BPE trained on the rendered conversations: the tool JSON and ChatML become few tokens each."""
    path = cache_dir() / "quickstart" / (f"chat-tokenizer-g{GENERATOR_VERSION}-{conversations}-v{CHAT_VOCAB}"
                                           f"-{TOKENIZER_SPLIT}.json")
    if not path.is_file():
        texts = (unmark(render_conversation(c.messages, c.tools))
                 for c in generate_conversations(conversations, CHAT_TRAIN_SEED))
        tokenizer = train_tokenizer(texts, CHAT_VOCAB, length=conversations)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, tokenizer.to_str())
    console.print(f"    tokenizer: {path}", highlight=False)
    return path


def run_chat_quickstart(max_time: str, out: Path | None, conversations: int, held_out_count: int,
                        console: Console) -> Path:
    """Procedural conversations -> a chat model that calls the app's calculator and clock, with its chat eval."""
    console.rule("[bold]cogni quickstart --chat")
    console.print(f"1/4 {conversations} procedural conversations ({SYNTHETIC_CHAT}) and a tokenizer trained on them")
    tokenizer = _chat_tokenizer(conversations, console)
    console.print("2/4 preparing the chat data (loss on the assistant turns only)")
    prepared = prepare_chat(ChatPrepareOptions([MixEntry(SYNTHETIC_CHAT, count=conversations)], tokenizer,
                                               seed=CHAT_TRAIN_SEED), console)
    console.print(f"    data dir: {prepared.data_dir.path}", highlight=False)
    config = _timed_config(CHAT_SETTINGS, max_time)
    fit = TokenWindows(prepared.data_dir, "train").alignment(config.model.max_seq_len)
    if fit is not None:
        console.print(f"    training windows: {fit.describe(config.model.max_seq_len)}", highlight=False)
    run = out or default_runs_dir() / f"quickstart-chat-{time.strftime('%Y%m%d-%H%M%S')}"
    console.print(f"3/4 training a {config.model.n_layers}-layer hybrid ({config.model.layer_pattern}: M = Mamba-2, "
                  f"A = attention) with a {config.model.max_seq_len}-token context for {max_time}")
    result = train(TrainOptions(config=config, data=prepared.data_dir.path, out=run), console)
    held_out = cache_dir() / "quickstart" / f"chat-held-out-g{GENERATOR_VERSION}-{held_out_count}.jsonl"
    if not held_out.is_file():
        write_conversations(held_out, held_out_count, seed=CHAT_HELD_OUT_SEED)
    console.print(f"4/4 chat eval on {held_out_count} held-out procedural conversations")
    turns = sum(message["role"] == "assistant" for conversation in load_eval_conversations(held_out)
                for message in conversation.messages)
    with make_progress(console, transient=True) as progress:
        task = progress.add_task("replaying assistant turns", total=turns)
        evaluation = eval_chat_turns(load_run(run), held_out, None, ModelReport(),
                                     lambda done: progress.update(task, completed=done))
    save_chat_eval(run, evaluation.metrics(), str(held_out), evaluation.summary())  # for the report card
    summary = f"val loss {result.val_loss:.3f}" if result.val_loss is not None else "no val loss"
    console.print(f"    {evaluation.summary()}", highlight=False)
    console.print(f"[green]done[/]: {result.step} steps, {summary}. Run dir: {run}\n"
                  f"Talk to it:  cogni chat {run} --enable-tools\n"
                  f"Check it:    cogni test-model {run} --chat-eval {held_out}", highlight=False)
    write_report_safely(run, console)
    return run
