"""Prompt caching: what each slot of a batch engine's cache still holds, and how much of a new prompt it saves.

A finished request leaves its keys and values in its slot's rows. The next request that starts with the same
ids (the next turn of a conversation, a shared system prompt, few-shot examples) takes the slot holding the
longest such prefix and reads only the rest, as llama-server's `cache_prompt` and vLLM's prefix caching do.
Attention keys can be kept for any prefix: positions past it are overwritten before anything reads them. A
Mamba-2 state stands for every id read before it and cannot be rewound, so a model with Mamba-2 layers continues
only from the end of what the slot read, or from a copy of its states saved where the last prompt ended (the
next turn of a chat extends the prompt, not the reply the model wrote).

A prefix held by a busy slot (a system prompt every client sends) is copied into the free slot a new request
takes, as vLLM shares prefix blocks across requests: keys and values of the shared positions, and for Mamba-2 the
states saved where that slot's prompt ended, when the new prompt shares all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cognimamba.model.mamba2 import MambaState
from cognimamba.model.transformer import DecodeCache


@dataclass
class RowMemory:
    """The ids one slot's rows hold, in order, and the Mamba-2 states saved where its last prompt ended."""

    ids: list[int] = field(default_factory=list)
    saved_at: int = 0  # how many of `ids` the saved states stand for (0: none saved)
    saved: dict[int, MambaState] = field(default_factory=dict)

    def keep(self, count: int) -> None:
        """Forget all but the first `count` ids (and the saved states, if they stand for more)."""
        del self.ids[count:]
        if self.saved_at > count:
            self.saved_at, self.saved = 0, {}


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
    its Mamba-2 states only the copy saved where its prompt ended (copy_prefix)."""
    common = common_prefix(memory.ids, prompt[:-1])
    if not recurrent:
        return common
    ends = (memory.saved_at,) if busy else (len(memory.ids), memory.saved_at)
    return max((count for count in ends if 0 < count <= common), default=0)


def save_states(memory: RowMemory, cache: DecodeCache, row: int) -> None:
    """Copy the row's Mamba-2 states as they stand after its prompt (nothing to copy without Mamba-2 layers)."""
    if cache.mamba_states:
        memory.saved = {layer: MambaState(state.conv[row].clone(), state.ssm[row].clone())
                        for layer, state in cache.mamba_states.items()}
        memory.saved_at = len(memory.ids)


def resume(memory: RowMemory, cache: DecodeCache, row: int, count: int) -> None:
    """Make the row hold the first `count` ids for a new request: restore the saved Mamba-2 states when that is
    where they were saved (and the row read past it since), then forget the rest."""
    if cache.mamba_states and 0 < count == memory.saved_at < len(memory.ids):
        _restore_states(cache, memory, row)
    memory.keep(count)


def _restore_states(cache: DecodeCache, memory: RowMemory, row: int) -> None:
    """Write the Mamba-2 states `memory` saved into the row."""
    for layer, state in memory.saved.items():
        cache.mamba_states[layer].conv[row].copy_(state.conv)
        cache.mamba_states[layer].ssm[row].copy_(state.ssm)


def copy_prefix(cache: DecodeCache, memories: list[RowMemory], source: int, target: int, count: int) -> None:
    """Make row `target` hold the first `count` ids of busy row `source` (reusable's count): keys and values of
    those positions, and the source's saved Mamba-2 states, which then stand for the target's ids too."""
    for layer, keys in cache.keys.items():
        keys[target, :, :count] = keys[source, :, :count]
        cache.values[layer][target, :, :count] = cache.values[layer][source, :, :count]
    giver, taker = memories[source], memories[target]
    taker.ids = giver.ids[:count]
    taker.saved_at, taker.saved = 0, {}
    if cache.mamba_states:
        _restore_states(cache, giver, target)
        taker.saved, taker.saved_at = giver.saved, count  # copies are never written in place: shared safely
