"""`cogni import-hf DIR --out RUN`: bring a Llama, Qwen 2, Qwen 3 or Gemma 3 checkpoint into a run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import stderr, stdout


def import_hf_command(
    source: Annotated[Path, typer.Argument(help="a Hugging Face checkpoint directory (config.json, "
                                                "model.safetensors, tokenizer.json)")],
    out: Annotated[Path, typer.Option("--out", help="run dir to create")],
    max_seq_len: Annotated[int | None, typer.Option("--max-seq-len", min=8, help="context length (default: the "
                                                    "checkpoint's max_position_embeddings; needed where that is "
                                                    "longer than cognimamba runs)")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing run dir's files")] = False,
) -> None:
    """Convert a Llama (3.2, SmolLM), Qwen 2/2.5, Qwen 3 or Gemma 3 checkpoint on disk into a cognimamba run (chat,
    bench, fine-tune it). Gemma 3 vision-language checkpoints import their text tower; MoE and vision models are
    refused by name."""
    from cognimamba.interop.import_hf import import_hf

    run, added = import_hf(source, out, max_seq_len=max_seq_len, force=force)
    if added:
        stderr().print(f"[yellow]note[/]: the tokenizer lacked {', '.join(added)}; they were added with "
                       "mean-initialised embeddings, so fine-tune on chat data before chatting", highlight=False,
                       soft_wrap=True)
    stderr().print(f"[green]imported[/] {source} -> {run}\nnext: cogni test-model {run}   |   cogni chat {run}",
                   highlight=False, soft_wrap=True)
    stdout().print(str(run), highlight=False, soft_wrap=True)
