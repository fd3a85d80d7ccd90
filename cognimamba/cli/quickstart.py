"""The main job on a built-in default: stories -> data dir -> cpu-profile run -> checks -> sample."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from cognimamba.config.overrides import resolve_config
from cognimamba.config.schema import set_field, validate
from cognimamba.data.prepare import PrepareOptions, prepare_text
from cognimamba.data.synthetic_stories import STORY_SEPARATOR, write_story_corpus
from cognimamba.evaluation.checks import test_model
from cognimamba.runs.loading import load_run
from cognimamba.system.paths import cache_dir, default_runs_dir
from cognimamba.train.entry import UNBOUNDED_STEPS, TrainOptions, train


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
    config = resolve_config("cpu", None, [])
    set_field(config, "train.max_time", max_time, "--max-time")
    config.train.max_steps = UNBOUNDED_STEPS
    validate(config)
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
    return run
