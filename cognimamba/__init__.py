"""cognimamba: train a small conversational language model on the hardware you own, then talk to it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cognimamba.system.version import VERSION as __version__

if TYPE_CHECKING:
    from cognimamba.runs.loading import LoadedRun


def load(run: str | Path, device: str = "cpu") -> LoadedRun:
    """Load a run dir: `.config`, `.tokenizer` (tokenizers.Tokenizer) and `.model` (torch.nn.Module, eval mode)."""
    from cognimamba.runs.loading import load_run  # noqa: PLC0415 (`import cognimamba` stays light; loading pulls in torch)

    return load_run(run, device=device)


__all__ = ["__version__", "load"]
