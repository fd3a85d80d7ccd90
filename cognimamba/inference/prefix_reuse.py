"""Prompt caching: what each slot of a batch engine's cache still holds, and how much of a new prompt it saves.

A finished request leaves its keys and values in its slot's rows. The next request that starts with the same
ids (the next turn of a conversation, a shared system prompt, few-shot examples) takes the slot holding the
longest such prefix and reads only the rest, as llama-server's `cache_prompt` and vLLM's prefix caching do.
Attention keys can be kept for any prefix: positions past it are overwritten before anything reads them. A
Mamba-2 state stands for every id read before it and cannot be rewound, so a model with Mamba-2 layers continues
from the end of what the slot read, or from a checkpoint: a copy of the states where a prompt ended (the next
turn of a chat extends the prompt, not the reply the model wrote), or where a whole chunk of the scan ended
inside a prompt's pass (a system prompt and tools that other conversations share), as vLLM keeps a hybrid
model's states at block boundaries.

A prefix held by a busy slot (a system prompt every client sends) is copied into the free slot a new request
takes, as vLLM shares prefix blocks across requests: keys and values of the shared positions, and for Mamba-2 the
states of a checkpoint within them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from cognimamba.model.mamba2 import MambaState
from cognimamba.model.transformer import DecodeCache

# Checkpoints a row keeps at most: the earliest (shared system prompts and tools sit at the start) and the latest
# (where the next turn starts). Each holds every Mamba-2 layer's states: 140 KB for the chat quickstart's model.
MAX_CHECKPOINTS = 8


@dataclass
class RowMemory:
    """The ids one slot's rows hold, in order, and copies of its Mamba-2 states at some of their positions."""

    ids: list[int] = field(default_factory=list)
    checkpoints: dict[int, dict[int, MambaState]] = field(default_factory=dict)  # ids read: each layer's states

    def keep(self, count: int) -> None:
        """Forget all but the first `count` ids, and the checkpoints past them."""
        del self.ids[count:]
        self.checkpoints = {read: states for read, states in self.checkpoints.items() if read <= count}

    def remember(self, read: int, states: dict[int, MambaState]) -> None:
        """Keep `states` as the checkpoint after `read` ids; past MAX_CHECKPOINTS the latest but one goes."""
        self.checkpoints[read] = states
        if len(self.checkpoints) > MAX_CHECKPOINTS:
            del self.checkpoints[sorted(self.checkpoints)[-2]]


def common_prefix(have: list[int], want: list[int]) -> int:
    """How many leading ids two sequences share."""
    count = 0
    for a, b in zip(have, want, strict=False):
        if a != b:
            break
        count += 1
    return count


def prefix_chains(prompts: list[list[int]]) -> list[list[int]]:
    """The prompts' indexes in chains of consecutive prompts that each start with the one before (a conversation's
    turns, replayed in order): decoded one after another in one slot, each reads only what it adds."""
    chains: list[list[int]] = []
    for index, prompt in enumerate(prompts):
        if chains and len(prompt) > len(prompts[index - 1]) and prompt[:len(prompts[index - 1])] == prompts[index - 1]:
            chains[-1].append(index)
        else:
            chains.append([index])
    return chains


def reusable(memory: RowMemory, prompt: list[int], recurrent: bool, busy: bool = False) -> int:
    """How many leading ids of `prompt` the row can skip reading. One is always left to read: its logits give
    the first token of the reply. `recurrent`: the model has Mamba-2 layers (see the module docstring). `busy`:
    the row is decoding, so another row can take only what stays put: any prefix of its keys and values, but of
    its Mamba-2 states only its checkpoints (copy_prefix)."""
    common = common_prefix(memory.ids, prompt[:-1])
    if not recurrent:
        return common
    ends = [*memory.checkpoints] if busy else [len(memory.ids), *memory.checkpoints]
    return max((count for count in ends if 0 < count <= common), default=0)


def save_states(memory: RowMemory, cache: DecodeCache, row: int) -> None:
    """Keep the row's Mamba-2 states after its ids as a checkpoint (nothing to keep without Mamba-2 layers)."""
    if cache.mamba_states:
        memory.remember(len(memory.ids), {layer: MambaState(state.conv[row].clone(), state.ssm[row].clone())
                                          for layer, state in cache.mamba_states.items()})


@contextmanager
def chunk_end_checkpoints(cache: DecodeCache, memories: list[RowMemory], start: int) -> Iterator[None]:
    """Within the block, the cache's Mamba-2 layers list the states a forward pass goes through where its chunks
    end (MambaState.chunk_ends); if the block ends without an error, they become checkpoints of memories[i], the
    memory of the pass's batch row i, which read from position `start`."""
    lists: dict[int, list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    for layer, state in cache.mamba_states.items():
        state.chunk_ends = lists[layer] = []
    try:
        yield
    finally:
        for state in cache.mamba_states.values():
            state.chunk_ends = None
    layers = list(lists)
    for ends in zip(*lists.values(), strict=True):  # one chunk's end, in every layer
        read = start + ends[0][0]
        for index, memory in enumerate(memories):
            memory.remember(read, {layer: MambaState(conv[index], ssm[index])
                                   for layer, (_, conv, ssm) in zip(layers, ends, strict=True)})


def resume(memory: RowMemory, cache: DecodeCache, row: int, count: int) -> None:
    """Make the row hold the first `count` ids for a new request: restore the checkpoint there when the row read
    past it since, then forget the rest."""
    if cache.mamba_states and 0 < count < len(memory.ids):
        _restore_states(cache, memory.checkpoints[count], row)
    memory.keep(count)


def _restore_states(cache: DecodeCache, states: dict[int, MambaState], row: int) -> None:
    """Write a checkpoint's Mamba-2 states into the row."""
    for layer, state in states.items():
        cache.mamba_states[layer].conv[row].copy_(state.conv)
        cache.mamba_states[layer].ssm[row].copy_(state.ssm)


def copy_prefix(cache: DecodeCache, memories: list[RowMemory], source: int, target: int, count: int) -> None:
    """Make row `target` hold the first `count` ids of busy row `source` (reusable's count): keys and values of
    those positions, and for Mamba-2 the source's checkpoint there, with its checkpoints before it."""
    for layer, keys in cache.keys.items():
        keys[target, :, :count] = keys[source, :, :count]
        cache.values[layer][target, :, :count] = cache.values[layer][source, :, :count]
    giver, taker = memories[source], memories[target]
    taker.ids = giver.ids[:count]
    # A checkpoint is never written in place once kept: the two rows share it safely.
    taker.checkpoints = {read: states for read, states in giver.checkpoints.items() if read <= count}
    if cache.mamba_states:
        _restore_states(cache, giver.checkpoints[count], target)
