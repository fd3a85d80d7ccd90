"""Every rank's random generators in a checkpoint, so dropout after a resume continues instead of repeating.

Each rank seeds its own stream (seed + rank) and draws its own dropout masks from the CPU generator, and on a
GPU from CUDA's; a checkpoint keeps both, for every rank, and each rank restores its own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from cognimamba.train.distributed import DistributedContext


def local_random_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def random_states(context: DistributedContext, device: torch.device) -> dict[str, Any]:
    """Every rank's generators, for the optimizer payload rank 0 writes (under DDP all ranks must call it)."""
    local = local_random_state(device)
    if not context.enabled:
        return {"random_states": [local]}
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, local)
    return {"random_states": gathered}


def restore_random_state(payload: dict[str, Any], context: DistributedContext, device: torch.device) -> None:
    """This rank's own generators; a rank the checkpoint has no state for keeps its fresh seed."""
    states = payload.get("random_states")
    if states is None:  # checkpoints of earlier versions hold rank 0's CPU state alone
        if context.is_main:
            torch.set_rng_state(payload["torch_rng"])
        return
    if context.rank >= len(states):  # resumed on more ranks than were saved
        return
    own = states[context.rank]
    torch.set_rng_state(own["cpu"])
    if device.type == "cuda" and "cuda" in own:
        torch.cuda.set_rng_state(own["cuda"], device)
