"""A Mamba-2 sequence mixer (state-space duality, Dao & Gu 2024) in plain PyTorch.

Each head keeps a state h of shape [head_dim, state_size] that decays by exp(dt * A) per token and takes in
the token's x (scaled by dt) along its B vector; the output reads the state along C:

    h_t = exp(dt_t * A) h_{t-1} + dt_t x_t B_t^T        y_t = h_t C_t + D x_t

Training and prefill compute this with the chunked SSD algorithm: inside a chunk the recurrence is a masked
matrix product (attention-like, matmul-friendly), between chunks only the states are passed on, so the work
grows linearly with the length. Decoding runs the recurrence itself, one token at a time from a cached state,
so each new token costs the same whatever the context length. B and C are shared by all heads (one group).
Parameter names follow transformers' Mamba2Mixer (in_proj, conv1d, dt_bias, A_log, D, norm, out_proj).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cognimamba.config.schema import ModelConfig
from cognimamba.model.linear import Linear

# Initial ranges of Mamba-2's reference implementation: per-head decay rates A in [1, 16] and step sizes dt
# log-uniform in [0.001, 0.1], so heads start out remembering over very different spans.
A_INIT_RANGE = (1.0, 16.0)
DT_INIT_RANGE = (0.001, 0.1)
DT_INIT_FLOOR = 1e-4


@dataclass
class MambaState:
    """What one Mamba-2 layer carries from token to token while decoding."""

    conv: torch.Tensor  # [batch, conv channels, conv_width - 1]: the last inputs the causal convolution still reads
    ssm: torch.Tensor  # [batch, heads, head_dim, state_size], fp32: it accumulates over the whole context
    # Where a list is given, a forward pass over several ids appends the states it passed through at the end of each
    # whole chunk before its last, as (ids read, conv, ssm): prompt caching resumes from them (inference/
    # prefix_reuse.py), as vLLM keeps a hybrid model's states at block boundaries. The scan has them anyway.
    chunk_ends: list[tuple[int, torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def empty(cls, config: ModelConfig, batch_size: int, device: torch.device | str,
              dtype: torch.dtype) -> MambaState:
        channels = config.mamba_inner + 2 * config.mamba_state_size
        return cls(torch.zeros((batch_size, channels, config.mamba_conv_width - 1), device=device, dtype=dtype),
                   torch.zeros((batch_size, config.mamba_heads, config.mamba_head_dim, config.mamba_state_size),
                               device=device, dtype=torch.float32))


def segment_sums(x: torch.Tensor) -> torch.Tensor:
    """[..., T] -> [..., T, T] with out[i, j] = x[j+1] + ... + x[i] for j <= i, and -inf above the diagonal.

    exp() of it is the decay from position j to position i. Summing the masked terms directly, rather than
    subtracting two cumulative sums, keeps long runs of small decays exact.
    """
    length = x.size(-1)
    spread = x.unsqueeze(-1).expand(*x.shape, length)  # spread[..., i, j] = x[i]
    strictly_below = torch.ones(length, length, dtype=torch.bool, device=x.device).tril(-1)
    sums = spread.masked_fill(~strictly_below, 0).cumsum(dim=-2)
    on_or_below = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
    return sums.masked_fill(~on_or_below, -torch.inf)


def ssd_scan(x: torch.Tensor, log_decay: torch.Tensor, b: torch.Tensor, c: torch.Tensor, chunk_size: int,
             initial_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked SSD scan: outputs [batch, length, heads, head_dim] and the state after each chunk of
    `chunk_size` ids, [batch, chunks, heads, head_dim, state_size]; the last is the final state.

    x: [batch, length, heads, head_dim] (already scaled by dt); log_decay: [batch, length, heads] (dt * A <= 0);
    b, c: [batch, length, state_size]; initial_state: [batch, heads, head_dim, state_size] or None (zeros).
    The last chunk is padded with tokens that neither decay nor add to the state, so any length works.
    """
    batch, length, heads, head_dim = x.shape
    b, c = b.to(x.dtype), c.to(x.dtype)
    if length <= chunk_size:
        return one_chunk_scan(x, log_decay, b, c, initial_state)
    pad = -length % chunk_size
    if pad:
        x, b, c = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, b, c))
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
    chunks = x.size(1) // chunk_size
    x = x.reshape(batch, chunks, chunk_size, heads, head_dim)
    b = b.reshape(batch, chunks, chunk_size, -1)
    c = c.reshape(batch, chunks, chunk_size, -1)
    log_decay = log_decay.reshape(batch, chunks, chunk_size, heads).permute(0, 3, 1, 2)  # [batch, heads, chunk, l]
    cumulative = log_decay.cumsum(dim=-1)

    # Within each chunk: a causal, decay-weighted product of C and B, the "attention" form of the recurrence.
    decay_within = torch.exp(segment_sums(log_decay))  # [batch, heads, chunk, l, s]
    scores = torch.einsum("bcln,bcsn->bcls", c, b).unsqueeze(1) * decay_within
    y_within = torch.einsum("bhcls,bcshp->bclhp", scores.to(x.dtype), x)

    # The state each chunk leaves behind on its own, then the states carried across chunks from the start.
    decay_to_end = torch.exp(cumulative[..., -1:] - cumulative)  # [batch, heads, chunk, l]
    chunk_states = torch.einsum("bcln,bhcl,bclhp->bchpn", b, decay_to_end.to(x.dtype), x)
    if initial_state is None:
        initial_state = torch.zeros_like(chunk_states[:, :1])
    else:
        initial_state = initial_state.unsqueeze(1).to(chunk_states.dtype)
    chunk_states = torch.cat([initial_state, chunk_states], dim=1)  # [batch, chunk + 1, heads, head_dim, state]
    decay_across = torch.exp(segment_sums(F.pad(cumulative[..., -1], (1, 0))))  # [batch, heads, c + 1, c + 1]
    carried = torch.einsum("bhzc,bchpn->bzhpn", decay_across.to(x.dtype), chunk_states)
    states = carried[:, :-1]  # where each chunk starts

    # What each position reads of the state its chunk started from.
    y_carried = torch.einsum("bcln,bchpn,bhcl->bclhp", c, states, torch.exp(cumulative).to(x.dtype))
    y = (y_within + y_carried).reshape(batch, chunks * chunk_size, heads, head_dim)
    return y[:, :length], carried[:, 1:]


def one_chunk_scan(x: torch.Tensor, log_decay: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                   initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """ssd_scan for a sequence no longer than one chunk (a prompt continued from a cached state, a short prompt),
    with ssd_scan's arguments: the same sums, without padding to the chunk size or passing states between
    chunks. About half the time of the padded scan for a few dozen tokens, which is all per-op cost.
    """
    log_decay = log_decay.permute(0, 2, 1)  # [batch, heads, length]
    cumulative = log_decay.cumsum(dim=-1)
    scores = torch.einsum("bln,bsn->bls", c, b).unsqueeze(1) * torch.exp(segment_sums(log_decay))
    y = torch.einsum("bhls,bshp->blhp", scores.to(x.dtype), x)
    decay_to_end = torch.exp(cumulative[..., -1:] - cumulative)  # [batch, heads, length]
    final_state = torch.einsum("bln,bhl,blhp->bhpn", b, decay_to_end.to(x.dtype), x)
    if initial_state is not None:
        initial_state = initial_state.to(final_state.dtype)
        y = y + torch.einsum("bln,bhpn,bhl->blhp", c, initial_state, torch.exp(cumulative).to(x.dtype))
        final_state = final_state + initial_state * torch.exp(cumulative[..., -1])[..., None, None]
    return y, final_state.unsqueeze(1)


class GatedRMSNorm(nn.Module):
    """RMSNorm of y * silu(z): the output gate of Mamba-2, normalised after gating as the reference does."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        gated = y.float() * F.silu(gate.float())
        return F.rms_norm(gated, (gated.size(-1),), self.weight.float(), self.eps).type_as(gate)


class Mamba2(nn.Module):
    """in_proj -> (z, x, B, C, dt); causal depthwise conv on x, B, C; SSD; gated RMSNorm; out_proj."""

    OWN_INIT = ("conv1d.weight", "conv1d.bias", ".dt_bias", ".A_log", ".D")  # reset_parameters sets these

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.inner, self.heads, self.head_dim = config.mamba_inner, config.mamba_heads, config.mamba_head_dim
        self.state_size, self.chunk_size = config.mamba_state_size, config.mamba_chunk_size
        self.conv_channels = self.inner + 2 * self.state_size
        # One matmul for all five inputs; rows: z (gate), x, B, C (the convolved part), dt per head.
        self.in_proj = Linear(config.dim, self.inner + self.conv_channels + self.heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_channels, self.conv_channels, config.mamba_conv_width,
                                groups=self.conv_channels)
        self.dt_bias = nn.Parameter(torch.empty(self.heads))
        self.A_log = nn.Parameter(torch.empty(self.heads))
        self.D = nn.Parameter(torch.empty(self.heads))
        self.norm = GatedRMSNorm(self.inner, config.norm_eps)
        self.out_proj = Linear(self.inner, config.dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The parameters that are not plain matrices, initialised as Mamba-2's reference does."""
        self.conv1d.reset_parameters()
        low, high = DT_INIT_RANGE
        dt = torch.exp(torch.rand(self.heads) * (math.log(high) - math.log(low)) + math.log(low))
        dt = dt.clamp(min=DT_INIT_FLOOR)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
        self.A_log.copy_(torch.log(torch.empty(self.heads).uniform_(*A_INIT_RANGE)))
        self.D.fill_(1.0)

    def forward(self, x: torch.Tensor, state: MambaState | None = None, start: int = 0) -> torch.Tensor:
        """x [batch, time, dim]; with `state`, the sequence continues it (start > 0) or replaces it (start == 0)."""
        batch, length, _ = x.shape
        z, xbc, dt = self.in_proj(x).split([self.inner, self.conv_channels, self.heads], dim=-1)
        resuming = state is not None and start > 0
        if resuming and length == 1:
            assert state is not None
            return self._step(z, xbc, dt, state)
        width = self.conv1d.kernel_size[0]
        history = state.conv if resuming else xbc.new_zeros(batch, self.conv_channels, width - 1)
        conv_input = torch.cat([history, xbc.transpose(1, 2)], dim=-1)
        if state is not None:
            state.conv.copy_(conv_input[..., conv_input.size(-1) - (width - 1):])
        xbc = F.silu(F.conv1d(conv_input, self.conv1d.weight, self.conv1d.bias, groups=self.conv_channels))
        values, b, c = xbc.transpose(1, 2).split([self.inner, self.state_size, self.state_size], dim=-1)
        values = values.reshape(batch, length, self.heads, self.head_dim)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # [batch, time, heads]
        log_decay = dt * -torch.exp(self.A_log.float())
        y, chunk_states = ssd_scan(values * dt.unsqueeze(-1), log_decay, b, c, self.chunk_size,
                                   state.ssm if resuming else None)
        if state is not None:
            state.ssm.copy_(chunk_states[:, -1])
            if state.chunk_ends is not None:
                for index in range(chunk_states.size(1) - 1):  # (the last: the pass's end, which `state` holds)
                    read = (index + 1) * self.chunk_size  # the conv's inputs then: conv_input[read:read + width - 1]
                    state.chunk_ends.append((read, conv_input[..., read:read + width - 1].clone(),
                                             chunk_states[:, index].clone()))
        y = y.to(values.dtype) + values * self.D.unsqueeze(-1).to(values.dtype)
        return self.out_proj(self.norm(y.reshape(batch, length, self.inner), z))

    def _step(self, z: torch.Tensor, xbc: torch.Tensor, dt: torch.Tensor, state: MambaState) -> torch.Tensor:
        """One token per sequence through the recurrence itself, updating `state` in place."""
        batch = z.size(0)
        conv_input = torch.cat([state.conv, xbc.transpose(1, 2)], dim=-1)  # [batch, channels, width]
        state.conv.copy_(conv_input[..., 1:])
        xbc = F.silu((conv_input * self.conv1d.weight.squeeze(1)).sum(dim=-1) + self.conv1d.bias)
        values, b, c = xbc.split([self.inner, self.state_size, self.state_size], dim=-1)
        values = values.reshape(batch, self.heads, self.head_dim)
        dt = F.softplus(dt[:, 0].float() + self.dt_bias.float())  # [batch, heads]
        decay = torch.exp(dt * -torch.exp(self.A_log.float()))
        update = (values.float() * dt.unsqueeze(-1)).unsqueeze(-1) * b.float()[:, None, None, :]
        state.ssm.mul_(decay[:, :, None, None]).add_(update)
        # The state read along C as one row times the state's rows: MKL's batched product of matrix and vector
        # took 150-190 us for 8 rows of the chat model's state on Zen 3, its row-times-matrix form 33.
        heads, head_dim, state_size = state.ssm.shape[1:]
        rows = state.ssm.reshape(batch, heads * head_dim, state_size).transpose(1, 2)
        y = (c.float()[:, None, :] @ rows).view(batch, heads, head_dim).to(values.dtype)
        y = y + values * self.D.unsqueeze(-1).to(values.dtype)
        return self.out_proj(self.norm(y.reshape(batch, 1, self.inner), z))
