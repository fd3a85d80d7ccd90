"""The stages of `cogni recipe chat`, each a function from the plan to files in OUT (and figures for the table).

    OUT/tokenizer.json          trained on a sample of the pretraining text and the rendered chat data
    OUT/data/pretrain, chat     data dirs (reused when their inputs are unchanged)
    OUT/base                    the pretrained run
    OUT/chat                    the chat model: `cogni chat OUT/chat --enable-tools`
    OUT/eval/held_out.jsonl     the held-out conversations of the chat eval, when no --chat-eval file is given
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from cognimamba.chat.format import render_conversation
from cognimamba.config.overrides import parse_override, resolve_config
from cognimamba.config.schema import Config, set_field, validate
from cognimamba.data.chat_sources import (
    SYNTHETIC_CHAT,
    SYNTHETIC_SOURCES,
    SYNTHETIC_TOOLS,
    ChatSource,
    iter_conversations,
    resolve_chat_source,
)
from cognimamba.data.prepare import PrepareOptions, prepare_text
from cognimamba.data.prepare_chat import ChatPrepareOptions, MixEntry, prepare_chat
from cognimamba.data.sources import iter_documents, resolve_source
from cognimamba.evaluation.chat_eval import RunCompletions, chat_eval
from cognimamba.evaluation.saved_evals import save_chat_eval
from cognimamba.evaluation.tool_eval import load_eval_conversations
from cognimamba.model.tokenizer import train_tokenizer, unmark
from cognimamba.recipes.plan import RecipePlan, SourceEntry
from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.runs.layout import WEIGHTS
from cognimamba.runs.loading import load_run, read_config
from cognimamba.system.console import make_progress
from cognimamba.system.fileio import atomic_write_text
from cognimamba.train.entry import UNBOUNDED_STEPS, TrainOptions, TrainResult, train

DOCUMENT_SEPARATOR = "<|recipe-document|>"  # between documents when several pretraining sources are joined
HELD_OUT_SEED = 1  # the synthetic sources train on seed 0


def chat_source(entry: SourceEntry, plan: RecipePlan, seed: int = 0) -> ChatSource:
    count = plan.synthetic_count if entry.source in SYNTHETIC_SOURCES else None
    return resolve_chat_source(entry.source, entry.format, count=count, seed=seed)


def _take(texts: Iterator[str], chars: int) -> Iterator[str]:
    """Texts until `chars` characters have been given."""
    given = 0
    for text in texts:
        if given >= chars:
            return
        given += len(text)
        yield text


def tokenizer_sample(plan: RecipePlan) -> Iterator[str]:
    """Pretraining documents and rendered conversations (by weight; half each by default), so JSON and ChatML
    tokenize well."""
    chat_chars = int(plan.tokenizer_sample_chars * plan.tokenizer_chat_fraction)
    text_chars = plan.tokenizer_sample_chars - chat_chars
    for entry in plan.pretrain_sources:
        spec = resolve_source(entry.source, limit=plan.pretrain_limit)
        documents = iter_documents(spec, "train" if spec.named else None)
        yield from _take(documents, text_chars // len(plan.pretrain_sources))
    total_weight = sum(entry.weight for entry in plan.chat_sources)
    for entry in plan.chat_sources if chat_chars else []:
        conversations = iter_conversations(chat_source(entry, plan))
        rendered = (unmark(render_conversation(c.messages, c.tools)) for c in conversations)
        yield from _take(rendered, int(chat_chars * entry.weight / total_weight))


def make_tokenizer(plan: RecipePlan, console: Console) -> dict[str, Any]:
    path = plan.out / "tokenizer.json"
    with make_progress(console, transient=True) as progress:
        progress.add_task("training the tokenizer on pretraining text and chat data", total=None)
        tokenizer = train_tokenizer(tokenizer_sample(plan), plan.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tokenizer.to_str())
    return {"vocab_size": tokenizer.get_vocab_size()}


def pretraining_source(plan: RecipePlan) -> tuple[str, str | None]:
    """One pretraining source as it is; several joined into one text file of documents."""
    if len(plan.pretrain_sources) == 1:
        return plan.pretrain_sources[0].source, None
    joined = plan.out / "data" / "pretrain.txt"
    documents = itertools.chain.from_iterable(
        iter_documents(resolve_source(entry.source, limit=plan.pretrain_limit)) for entry in plan.pretrain_sources)
    atomic_write_text(joined, f"\n{DOCUMENT_SEPARATOR}\n".join(documents))
    return str(joined), DOCUMENT_SEPARATOR


def prepare_data(plan: RecipePlan, console: Console) -> dict[str, Any]:
    tokenizer = plan.out / "tokenizer.json"
    source, separator = pretraining_source(plan)
    text = prepare_text(PrepareOptions(source=source, tokenizer=tokenizer, separator=separator,
                                       limit=plan.pretrain_limit, out=plan.out / "data" / "pretrain"), console)
    entries = [MixEntry(entry.source, entry.weight, entry.format,
                        count=plan.synthetic_count if entry.source in SYNTHETIC_SOURCES else None)
               for entry in plan.chat_sources]
    chat = prepare_chat(ChatPrepareOptions(entries, tokenizer, val_fraction=plan.chat_val_fraction,
                                           out=plan.out / "data" / "chat"), console)
    return {"pretrain_tokens": text.data_dir.meta["train_tokens"],
            "chat_conversations": chat.data_dir.meta["train_conversations"]}


def started(run: Path) -> bool:
    """A stage's run that has something to resume from."""
    return (run / WEIGHTS).is_file() or latest_checkpoint(run) is not None


def _stage_config(plan: RecipePlan, run: Path, settings: list[str], seconds: int) -> Config:
    """The profile with the stage's settings, or the stopped run's own config; the stage's time either way."""
    config = read_config(run)[0] if started(run) else resolve_config(plan.profile, None, settings)
    set_field(config, "train.max_time", f"{seconds}s", "the recipe budget")
    if not started(run) and not any(parse_override(text)[0] == "train.max_steps" for text in settings):
        config.train.max_steps = UNBOUNDED_STEPS
    validate(config)
    return config


def pretrain(plan: RecipePlan, console: Console, show_progress: bool) -> dict[str, Any]:
    run = plan.out / "base"
    config = _stage_config(plan, run, plan.pretrain.settings, plan.stage_seconds("pretrain"))
    result = train(TrainOptions(config=config, data=plan.out / "data" / "pretrain", out=run, resume=started(run),
                                show_progress=show_progress), console)
    return _figures(result)


def fine_tune(plan: RecipePlan, console: Console, show_progress: bool) -> dict[str, Any]:
    """Chat fine-tuning from OUT/base: the fine-tuning defaults fill what the recipe's settings leave open."""
    run, settings = plan.out / "chat", plan.chat.settings
    config = _stage_config(plan, run, settings, plan.stage_seconds("chat"))
    user_set = frozenset({parse_override(text)[0] for text in settings} | {"train.max_time", "train.max_steps"})
    model_overrides = {name.split(".", 1)[1]: getattr(config.model, name.split(".", 1)[1])
                       for name in user_set if name.startswith("model.")}
    result = train(TrainOptions(config=config, data=plan.out / "data" / "chat", out=run, resume=started(run),
                                init_from=plan.out / "base", show_progress=show_progress, user_set=user_set,
                                model_overrides=model_overrides), console)
    return _figures(result)


def _figures(result: TrainResult) -> dict[str, Any]:
    return {"steps": result.step, "val_loss": result.val_loss, "val_bits_per_byte": result.val_bits_per_byte,
            "seconds": round(result.elapsed)}


def held_out_file(plan: RecipePlan) -> tuple[Path, str | None]:
    """The --chat-eval file, or held-out synthetic tool and chat conversations (another seed than training)."""
    if plan.chat_eval is not None:
        return Path(plan.chat_eval.source), plan.chat_eval.format
    path = plan.out / "eval" / "held_out.jsonl"
    half = max(1, plan.eval_conversations // 2)
    lines = [json.dumps({"messages": conversation.messages, "tools": conversation.tools}, ensure_ascii=False)
             for name in (SYNTHETIC_TOOLS, SYNTHETIC_CHAT)
             for conversation in iter_conversations(resolve_chat_source(name, count=half, seed=HELD_OUT_SEED))]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path, None


def evaluate(plan: RecipePlan, console: Console) -> dict[str, Any]:
    """Turn-taking and the tool-call rates of OUT/chat on held-out conversations."""
    path, format = held_out_file(plan)
    conversations = load_eval_conversations(path, format)[:plan.eval_conversations]
    loaded = load_run(plan.out / "chat")
    turns = sum(message["role"] == "assistant" for c in conversations for message in c.messages)
    with make_progress(console, transient=True) as progress:
        task = progress.add_task("chat eval: replaying held-out assistant turns", total=turns)
        report = chat_eval(RunCompletions(loaded.model, loaded.tokenizer), conversations,
                           on_turn=lambda done: progress.update(task, completed=done))
    metrics = {key: value for key, value in report.metrics().items() if key != "examples"}
    save_chat_eval(plan.out / "chat", metrics, str(path), report.summary())  # the chat run's report card shows it
    return {**metrics, "file": str(path), "summary": report.summary()}
