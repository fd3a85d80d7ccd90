"""The fixed-point context model of the New-LLM design: one recurrent context vector, no attention, no positions.

Token t's context comes from a gated context updater F applied to the previous token's context and the token:
c_t = F(c_{t-1}, x_t), from c_{-1} = 0. Training and prefill do not run that recurrence token by token; they
iterate *passes* over the whole sequence at once,

    C^(1)_t = F(0, x_t)                  the first pass observes each token on its own
    C^(k)_t = F(C^(k-1)_{t-1}, x_t)      later passes read the previous pass's contexts

whose fixed point (C = pass(C)) is the recurrence itself. A token has converged when its context moves less
than model.fixed_point_threshold (RMS over the context) from one pass to the next. The chain is causal, so pass
k leaves the first k tokens exact and T passes always reach the fixed point of T tokens; an updater that is a
contraction in the context (the gate mixes the old context back in, so a small-weight one is) gets every token
there in a few passes, whatever the length. Where the passes run out first, inference finishes the unsettled
tokens by the recurrence itself, so its answer is exact either way. Decoding needs no passes at all: a new
token's context is one updater step from the cached one, so each token costs the same whatever the context.

The token head predicts the next token from [c_t, x_t]. Training runs in two phases (train/fixed_point_phases):
phase 1 trains the updater and the embedding so that passes agree, each pass's teacher being the pass before;
phase 2 freezes them, caches the contexts, and trains the head alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cognimamba.config.schema import ModelConfig
from cognimamba.model.linear import Linear
from cognimamba.model.transformer import RMSNorm

# Inference iterates passes until no context moves more than this (RMS): the recurrence to float precision, so
# prefill, the full forward and token-by-token decoding agree.
EXACT_TOLERANCE = 1e-6
# sigmoid(1) = 0.73 of the old context kept per layer at first: a memory of a few tokens, and a contraction.
GATE_BIAS_INIT = 1.0
# Phase 1's anti-collapse term: each context dimension should vary across tokens by at least this (VICReg's
# variance hinge); agreeing passes alone are easiest to get by mapping every token to the same context.
DIVERSITY_STD = 0.5


def rms_change(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per token, how far its context moved: [batch, time, context] -> [batch, time]."""
    return (new.float() - old.float()).pow(2).mean(dim=-1).sqrt()


@dataclass
class Convergence:
    """How a batch's tokens reached the fixed point, counted pass by pass (pass 1 only observes)."""

    last_moving: torch.Tensor  # [batch, time]: the last pass that moved the token's context past the threshold
    converged: torch.Tensor  # [batch, time] bool: under the threshold at the last pass counted
    last_pass: int = 1

    @classmethod
    def start(cls, shape: torch.Size, device: torch.device | str = "cpu") -> Convergence:
        return cls(torch.ones(shape, dtype=torch.long, device=device),
                   torch.zeros(shape, dtype=torch.bool, device=device))

    def observe(self, pass_index: int, change: torch.Tensor, threshold: float) -> None:
        """Pass `pass_index` (>= 2) moved each token's context by `change` (RMS)."""
        moving = change >= threshold
        self.last_moving = torch.where(moving, pass_index, self.last_moving)
        self.converged = ~moving
        self.last_pass = pass_index

    @property
    def iterations(self) -> torch.Tensor:
        """Per token, the passes it took to stop moving; a token still moving took every pass counted."""
        return torch.where(self.converged, self.last_moving + 1, self.last_pass)

    @property
    def rate(self) -> float:
        return float(self.converged.float().mean())

    @property
    def mean_iterations(self) -> float:
        return float(self.iterations.float().mean())


class ContextCache:
    """What decoding carries from token to token: each sequence's context after the last token it has seen."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.max_len = max_len or config.max_seq_len
        self.context = torch.zeros((batch_size, config.fixed_point_shape[1]), device=device, dtype=dtype)
        self.position = 0  # tokens seen: a context cannot be rewound, only continued or restarted at 0

    def carried(self, start: int, length: int) -> torch.Tensor | None:
        """The context the sequence at `start` continues from (None: a fresh one)."""
        if start + length > self.max_len:
            raise ValueError(f"context cache holds {self.max_len} positions; asked for {start + length}")
        if start == 0:
            return None
        if start != self.position:
            raise ValueError(f"context cache is at position {self.position}; cannot continue at {start}")
        return self.context


class ContextLayer(nn.Module):
    """One gated update: the context moves towards a candidate from [context, token] by a per-dimension gate."""

    def __init__(self, context_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.hidden = Linear(2 * context_dim, hidden_dim, bias=False)
        self.out = Linear(hidden_dim, 2 * context_dim, bias=False)  # rows: candidate, gate
        self.gate_bias = nn.Parameter(torch.full((context_dim,), GATE_BIAS_INIT))

    def forward(self, context: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        candidate, gate = self.out(F.silu(self.hidden(torch.cat([context, token], dim=-1)))).chunk(2, dim=-1)
        keep = torch.sigmoid(gate + self.gate_bias)
        # A convex mix of the old context and a tanh: contexts stay in [-1, 1] whatever the weights.
        return keep * context + (1 - keep) * torch.tanh(candidate)


class ContextUpdater(nn.Module):
    """F(context, token): `num_layers` gated updates in turn, each reading the token again."""

    def __init__(self, num_layers: int, context_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ContextLayer(context_dim, hidden_dim) for _ in range(num_layers))

    def forward(self, context: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            context = layer(context, token)
        return context


class TokenHead(nn.Module):
    """Next-token logits from [context, token]: the only part phase 2 trains."""

    def __init__(self, context_dim: int, hidden_dim: int, vocab_size: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.norm = RMSNorm(2 * context_dim, eps)
        self.hidden = Linear(2 * context_dim, hidden_dim, bias=False)
        self.proj = Linear(hidden_dim, context_dim, bias=False)
        self.output = Linear(context_dim, vocab_size, bias=False)
        self.dropout = float(dropout)

    def forward(self, context: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.hidden(self.norm(torch.cat([context, token], dim=-1))))
        if self.dropout and self.training:
            hidden = F.dropout(hidden, self.dropout)
        return self.output(self.proj(hidden))


@dataclass
class TeacherPass:
    """One phase-1 pass: its loss (with gradient) and how far each token's context moved."""

    pass_index: int  # 2, 3, ...: pass 1 only observes
    loss: torch.Tensor
    fixed_point_loss: float
    change: torch.Tensor  # [batch, time]


class FixedPointModel(nn.Module):
    """Embedding -> contexts at the fixed point of the passes -> token head; forward() is LanguageModel's."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        layers, context_dim, hidden_dim = config.fixed_point_shape
        self.context_dim = context_dim
        self.tok_embeddings = nn.Embedding(config.vocab_size, context_dim)
        self.token_norm = RMSNorm(context_dim, config.norm_eps)
        self.updater = ContextUpdater(layers, context_dim, hidden_dim)
        self.head = TokenHead(context_dim, hidden_dim, config.vocab_size, config.norm_eps, config.dropout)
        self.gradient_checkpointing = False  # set by training for every model; nothing here to checkpoint
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            elif name.endswith("gate_bias"):
                nn.init.constant_(param, GATE_BIAS_INIT)
            else:
                nn.init.normal_(param, mean=0.0, std=self.config.init_std)

    def context_parameters(self) -> list[nn.Parameter]:
        """What phase 1 trains and phase 2 freezes: the embedding and the updater (the head is the rest)."""
        return [*self.tok_embeddings.parameters(), *self.token_norm.parameters(), *self.updater.parameters()]

    def token_inputs(self, idx: torch.Tensor) -> torch.Tensor:
        """The updater's and the head's view of each token: its embedding at unit RMS."""
        return self.token_norm(self.tok_embeddings(idx))

    def one_pass(self, contexts: torch.Tensor, tokens: torch.Tensor, carried: torch.Tensor | None) -> torch.Tensor:
        """Every token's context from the previous token's context in `contexts` (the first reads `carried`)."""
        first = carried.unsqueeze(1) if carried is not None else contexts.new_zeros(contexts[:, :1].shape)
        return self.updater(torch.cat([first.to(contexts.dtype), contexts[:, :-1]], dim=1), tokens)

    def solve(self, tokens: torch.Tensor, carried: torch.Tensor | None = None,
              convergence: Convergence | None = None) -> torch.Tensor:
        """The contexts at the fixed point, to EXACT_TOLERANCE.

        Up to model.fixed_point_max_iterations passes (`convergence` counts which tokens settled under the
        threshold); where some have not settled to EXACT_TOLERANCE by then, the recurrence finishes them one
        token at a time from the first unsettled one, so the answer is exact however the updater behaves. With
        gradients on, the last pass is taken again with them (a one-step gradient through the fixed point, as
        deep equilibrium models use), so every parameter learns from the logits.
        """
        limit, threshold = self.config.fixed_point_max_iterations, self.config.fixed_point_threshold
        with torch.no_grad():
            contexts = self.one_pass(tokens.new_zeros(*tokens.shape[:2], self.context_dim), tokens, carried)
            change = torch.full(tokens.shape[:2], torch.inf, device=tokens.device)
            for pass_index in range(2, limit + 1):
                new = self.one_pass(contexts, tokens, carried)
                change, contexts = rms_change(new, contexts), new
                if convergence is not None:
                    convergence.observe(pass_index, change, threshold)
                if float(change.max()) <= EXACT_TOLERANCE:
                    break
            contexts = self.finish_recurrently(contexts, tokens, carried, change)
        if torch.is_grad_enabled():
            contexts = self.one_pass(contexts.detach(), tokens, carried)
        return contexts

    def finish_recurrently(self, contexts: torch.Tensor, tokens: torch.Tensor, carried: torch.Tensor | None,
                           change: torch.Tensor) -> torch.Tensor:
        """Run the recurrence from the first token that still moved more than EXACT_TOLERANCE in the last pass."""
        moving = (change > EXACT_TOLERANCE).any(dim=0).nonzero()
        if len(moving) == 0:
            return contexts
        contexts = contexts.clone()
        first = int(moving[0])
        previous = contexts[:, first - 1] if first > 0 else (
            carried.to(contexts.dtype) if carried is not None else contexts.new_zeros(contexts[:, 0].shape))
        for position in range(first, contexts.size(1)):
            previous = self.updater(previous, tokens[:, position])
            contexts[:, position] = previous
        return contexts

    def teacher_passes(self, idx: torch.Tensor) -> Iterator[TeacherPass]:
        """Phase 1 on a batch: pass 1 observes, then each pass is trained towards the one before (its teacher).

        Call backward on each pass's loss before taking the next (the passes share no graph). Stops when every
        token has settled under the threshold, or after model.fixed_point_max_iterations passes. Each pass's loss
        is divided by the most passes there can be, so stopping early leaves the gradient's scale alone.
        """
        config = self.config
        with torch.no_grad():
            tokens = self.token_inputs(idx)
            teacher = self.one_pass(tokens.new_zeros(*tokens.shape[:2], self.context_dim), tokens, None)
        for pass_index in range(2, config.fixed_point_max_iterations + 1):
            contexts = self.one_pass(teacher, self.token_inputs(idx), None)
            fixed_point_loss = F.mse_loss(contexts.float(), teacher.float())
            spread = contexts.float().flatten(0, 1).std(dim=0, correction=0)
            diversity = F.relu(DIVERSITY_STD - spread).mean()
            objective = fixed_point_loss + config.fixed_point_diversity * diversity
            loss = objective / (config.fixed_point_max_iterations - 1)
            change = rms_change(contexts.detach(), teacher)
            yield TeacherPass(pass_index, loss, float(fixed_point_loss.detach()), change)
            teacher = contexts.detach()
            if float(change.max()) < config.fixed_point_threshold:
                return

    def head_logits(self, contexts: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits from given contexts: phase 2 trains on the cached ones."""
        return self.head(contexts.to(self.head.output.weight.dtype), self.token_inputs(idx))

    def forward(self, idx: torch.Tensor, cache: ContextCache | None = None, start: int = 0,
                last_only: bool = False, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for `idx` [batch, time]; with `cache`, the sequence continues its context (start > 0).

        `keep` (bool, [batch, time]): logits of those positions only, as [kept, vocab] (training on chat data).
        """
        length = idx.size(1)
        if start + length > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + length} tokens exceeds max_seq_len {self.config.max_seq_len}")
        carried = cache.carried(start, length) if cache is not None else None
        tokens = self.token_inputs(idx)
        if carried is not None and length == 1:
            contexts = self.updater(carried.unsqueeze(1).to(tokens.dtype), tokens)  # decoding: one step, no passes
        else:
            contexts = self.solve(tokens, carried)
        if cache is not None:
            cache.context.copy_(contexts[:, -1])
            cache.position = start + length
        if last_only:
            contexts, tokens = contexts[:, -1:], tokens[:, -1:]
        elif keep is not None:
            contexts, tokens = contexts[keep], tokens[keep]
        return self.head(contexts, tokens)


def fixed_point_flops_per_token(config: ModelConfig) -> float:
    """Training FLOPs per token of one updater pass and the head (phase 1 runs several passes per token)."""
    layers, context_dim, hidden_dim = config.fixed_point_shape
    updater = layers * 2 * (2 * context_dim * hidden_dim)
    head = 2 * context_dim * hidden_dim + hidden_dim * context_dim + context_dim * config.vocab_size
    return 6.0 * (updater + head)
