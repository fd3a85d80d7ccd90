"""The random generators' state in a checkpoint, so dropout after a resume continues where it left off."""

from __future__ import annotations

from typing import Any

import torch

from cognimamba.train.distributed import DistributedContext


def random_states(context: DistributedContext, device: torch.device) -> dict[str, Any]:
    """The part of the optimizer payload that restores the random generators."""
    return {"torch_rng": torch.get_rng_state()}


def restore_random_state(payload: dict[str, Any], context: DistributedContext, device: torch.device) -> None:
    torch.set_rng_state(payload["torch_rng"])
