"""`cogni export RUN --format hf|gguf`: hand a run to transformers, llama.cpp or Ollama."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cognimamba.cli.commands.common import stderr, stdout


def export_command(
    run: Annotated[Path, typer.Argument(help="run dir (a LoRA run exports merged unless --adapter)")],
    export_format: Annotated[str, typer.Option("--format", help="hf (transformers dir) or gguf (llama.cpp file), "
                                                                "each as the run's model.family (default llama)")],
    out: Annotated[Path, typer.Option("--out", help="output directory (hf) or FILE.gguf (gguf)")],
    dtype: Annotated[str, typer.Option("--dtype", help="weights as f32, f16 or bf16; for gguf also q8_0 or q4_0 (llama.cpp's block quantizations)")] = "f32",
    merged: Annotated[bool, typer.Option("--merged", help="LoRA run: fold the adapter in (default)")] = False,
    adapter: Annotated[bool, typer.Option("--adapter", help="LoRA run (hf only): write OUT/base and a PEFT "
                                                            "adapter in OUT/adapter")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out")] = False,
) -> None:
    """Export a run as a Hugging Face model dir (config, safetensors, tokenizer, chat template, card) or a GGUF file."""
    from cognimamba.errors import CogniError

    if merged and adapter:
        raise CogniError("--merged and --adapter exclude each other; pick one")
    if export_format == "hf":
        from cognimamba.interop.hf_dir import export_hf

        written = export_hf(run, out, dtype=dtype, adapter=adapter, force=force)
        stderr().print(f"[green]exported[/] {run} -> {written} (transformers: "
                       f"AutoModelForCausalLM.from_pretrained({str(written)!r}))", highlight=False, soft_wrap=True)
    elif export_format == "gguf":
        if adapter:
            raise CogniError("--adapter is for --format hf; a GGUF export of a LoRA run is always merged")
        from cognimamba.interop.gguf_file import export_gguf

        written = export_gguf(run, out, dtype=dtype, force=force)
        stderr().print(f"[green]exported[/] {run} -> {written} (llama.cpp: llama-cli -m {written})",
                       highlight=False, soft_wrap=True)
    else:
        raise CogniError(f"--format {export_format!r} is not supported; choose hf or gguf")
    stdout().print(str(written), highlight=False, soft_wrap=True)
