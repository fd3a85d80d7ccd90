"""A Llama-style decoder in plain PyTorch: RoPE, RMSNorm, SwiGLU, grouped-query attention, tied embeddings.

The other families people fine-tune differ from it in a few choices, each one option of ModelConfig read here:
Qwen 2's q/k/v biases, Qwen 3's QK-norm and wider heads (`head_dim`), Llama 3's RoPE scaling, and Gemma 3's
GeGLU, `(1 + w)` norms around both branches, scaled embeddings, `query_pre_attn_scalar` and sliding-window
layers with their own RoPE theta. With every option at its default, this is exactly the Llama it always was.

With `model.layer_pattern`, some layers mix the sequence with Mamba-2 (model/mamba2.py) instead of attention;
each keeps its MLP, as in Jamba and Samba. An empty pattern builds exactly the all-attention model.

Projections are fused (one matmul for q/k/v, one for gate/up) because on small models the number of
kernel launches, not arithmetic, dominates; export splits them back into the usual Llama names.
`Linear` is nn.Linear with a faster fp32 CPU matmul (model/linear.py); weights and names are nn.Linear's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cognimamba.config.schema import ModelConfig
from cognimamba.model.dropout import dropout
from cognimamba.model.linear import Linear
from cognimamba.model.mamba2 import Mamba2, MambaState


class RMSNorm(nn.Module):
    """RMSNorm scaling by `offset + weight`: Gemma stores w and scales by 1 + w, so its weights load as they are."""

    def __init__(self, dim: int, eps: float, offset: float = 0.0) -> None:
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            weight = self.weight + self.offset if self.offset else self.weight
            return F.rms_norm(x, (x.size(-1),), weight, self.eps)
        # Normalise in fp32 even under autocast: half-precision mean-of-squares loses too much.
        weight = self.weight.float() + self.offset if self.offset else self.weight.float()
        return F.rms_norm(x.float(), (x.size(-1),), weight, self.eps).type_as(x)


def norm(config: ModelConfig, dim: int | None = None) -> RMSNorm:
    return RMSNorm(dim or config.dim, config.norm_eps, config.norm_weight_offset)


def rope_inverse_frequencies(head_dim: int, theta: float, config: ModelConfig | None = None) -> torch.Tensor:
    """RoPE's frequencies (float64), with `config`'s rope_scaling applied (transformers' "linear" and "llama3").

    llama3 leaves the fast frequencies alone, divides the slow ones by the factor, and blends in between, so a
    model pretrained on `rope_original_max_len` positions reads longer ones without relearning the short range.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if config is None or config.rope_scaling == "none":
        return inv_freq
    factor = config.rope_scaling_factor
    if config.rope_scaling == "linear":
        return inv_freq / factor
    low, high, original = config.rope_low_freq_factor, config.rope_high_freq_factor, config.rope_original_max_len
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    in_between = (wavelength >= original / high) & (wavelength <= original / low)
    return torch.where(in_between, blended, scaled)


def rope_tables(head_dim: int, max_len: int, theta: float,
                scaling: ModelConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of shape [max_len, head_dim] in the "rotate half" layout Hugging Face Llama uses.

    The sin table is negated on its first half, so rotating is `x * cos + roll(x) * sin` (see apply_rope).
    `scaling`: the config whose rope_scaling applies (global layers only, as in Gemma 3).
    """
    inv_freq = rope_inverse_frequencies(head_dim, theta, scaling)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
    sin = angles.sin()
    return torch.cat([angles, angles], dim=-1).cos().float(), torch.cat([-sin, sin], dim=-1).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """HF's x * cos + rotate_half(x) * sin: rotate_half(x) = cat(-x2, x1) = roll(x) with the sign in the table."""
    return x * cos + x.roll(x.size(-1) // 2, dims=-1) * signed_sin


class DecodeCache:
    """Preallocated keys and values of every attention layer, and the conv and SSM state of every Mamba-2 layer,
    so decoding allocates nothing per token. A Mamba-2 layer's state does not grow with the context."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.max_len = max_len or config.max_seq_len
        # One spare position: reading the cache is then always a strided slice, never the whole (contiguous)
        # tensor, which torch.compile would treat as a new case and compile again at the last position.
        shape = (batch_size, config.n_kv_heads, self.max_len + 1, config.attention_head_dim)
        attention_layers = [layer for layer in range(config.n_layers) if not config.is_mamba_layer(layer)]
        self.keys = {layer: torch.zeros(shape, device=device, dtype=dtype) for layer in attention_layers}
        self.values = {layer: torch.zeros(shape, device=device, dtype=dtype) for layer in attention_layers}
        self.mamba_states = {layer: MambaState.empty(config, batch_size, device, dtype)
                             for layer in range(config.n_layers) if config.is_mamba_layer(layer)}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked for {end}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def rows(self, first: int, stop: int) -> DecodeCache:
        """Rows first..stop-1 as a cache of their own: views, so what a forward pass writes lands in this one.

        One sequence slot's prompt is read into its rows this way while the other slots hold their own.
        """
        view = object.__new__(DecodeCache)
        view.max_len = self.max_len
        view.keys = {layer: keys[first:stop] for layer, keys in self.keys.items()}
        view.values = {layer: values[first:stop] for layer, values in self.values.items()}
        view.mamba_states = {layer: MambaState(state.conv[first:stop], state.ssm[first:stop])
                             for layer, state in self.mamba_states.items()}
        return view

    def gather_rows(self, rows: torch.Tensor, keep: int, size: int) -> DecodeCache:
        """Copies of `rows` (any rows, in that order) as a cache of their own holding `size` positions, the first
        `keep` of them filled from these rows: several slots' prompts read in one forward pass (put_rows)."""
        part = object.__new__(DecodeCache)
        part.max_len = size
        part.keys, part.values = {}, {}
        for layer, keys in self.keys.items():
            shape = (len(rows), keys.size(1), size + 1, keys.size(3))
            part.keys[layer] = keys.new_empty(shape)
            part.values[layer] = keys.new_empty(shape)
            part.keys[layer][:, :, :keep] = keys[rows, :, :keep]
            part.values[layer][:, :, :keep] = self.values[layer][rows, :, :keep]
        part.mamba_states = {layer: MambaState(state.conv[rows], state.ssm[rows])
                             for layer, state in self.mamba_states.items()}
        return part

    def put_rows(self, rows: torch.Tensor, part: DecodeCache, start: int, end: int) -> None:
        """Write positions start..end-1 of `part` (gather_rows of the same rows) back into `rows`, and their
        Mamba-2 states."""
        for layer, keys in self.keys.items():
            keys[rows, :, start:end] = part.keys[layer][:, :, start:end]
            self.values[layer][rows, :, start:end] = part.values[layer][:, :, start:end]
        for layer, state in self.mamba_states.items():
            state.conv[rows] = part.mamba_states[layer].conv
            state.ssm[rows] = part.mamba_states[layer].ssm


class SlotStep:
    """One decoding step of some rows of a DecodeCache, each row at its own position (continuous batching).

    Keys and values are written at each row's position and read back up to `limit` (one past the furthest
    position); a row's mask hides the positions after its own. Mamba-2 states are copied out for the step and
    written back by `write_back`, since rows are gathered, not sliced.
    """

    def __init__(self, cache: DecodeCache, rows: torch.Tensor, positions: torch.Tensor, views: bool = True) -> None:
        """`views=False` always gathers rows: torch.compile would specialise on a view's first row and length."""
        self.cache, self.rows, self.positions = cache, rows, positions
        self.limit = int(positions.max()) + 1
        if self.limit > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; asked for {self.limit}")
        # Consecutive rows (every slot busy, the usual case under load) are read as views, not gathered copies.
        first = int(rows[0])
        consecutive = views and bool((rows == torch.arange(first, first + len(rows), device=rows.device)).all())
        self.span = slice(first, first + len(rows)) if consecutive else None
        pick = self.span if self.span is not None else rows
        self.mamba_states = {layer: MambaState(state.conv[pick], state.ssm[pick])
                             for layer, state in cache.mamba_states.items()}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block's cache call for keys and values [rows, heads, 1, head_dim]; each row has its own position."""
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        keys[self.rows, :, self.positions] = k[:, :, 0]
        values[self.rows, :, self.positions] = v[:, :, 0]
        if self.span is not None:
            return keys[self.span, :, :self.limit], values[self.span, :, :self.limit]
        return keys[self.rows, :, :self.limit], values[self.rows, :, :self.limit]

    def write_back(self) -> None:
        """Gathered Mamba-2 states back into their rows (views of consecutive rows were updated in place)."""
        if self.span is not None:
            return
        for layer, state in self.mamba_states.items():
            self.cache.mamba_states[layer].conv[self.rows] = state.conv
            self.cache.mamba_states[layer].ssm[self.rows] = state.ssm


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.head_dim = config.attention_head_dim
        # rows: q heads, k heads, v heads; biased for Qwen 2 only, as its checkpoints are (their output is not)
        self.qkv = Linear(config.dim, config.q_dim + 2 * config.kv_dim, bias=config.qkv_bias)
        self.proj = Linear(config.q_dim, config.dim, bias=False)
        self.q_norm = norm(config, self.head_dim) if config.qk_norm else None
        self.k_norm = norm(config, self.head_dim) if config.qk_norm else None
        # Gemma scales scores by query_pre_attn_scalar ** -0.5 rather than head_dim's; None is SDPA's head_dim.
        self.scale = config.attention_scale ** -0.5 if config.attention_scale else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: DecodeCache | None, start: int) -> torch.Tensor:
        batch, length, _ = x.shape
        heads = self.qkv(x).view(batch, length, self.n_heads + 2 * self.n_kv_heads, self.head_dim)
        qk, v = heads.split([self.n_heads + self.n_kv_heads, self.n_kv_heads], dim=2)
        if self.q_norm is not None and self.k_norm is not None:
            qk = torch.cat([self.q_norm(qk[:, :, :self.n_heads]), self.k_norm(qk[:, :, self.n_heads:])], dim=2)
        # Queries and keys share positions, so one rotation covers both: [batch, time, heads, head_dim].
        qk = apply_rope(qk, cos, sin)
        q, k = qk.transpose(1, 2).split([self.n_heads, self.n_kv_heads], dim=1)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer, k, v, start)
        # A single decoded token may see every cached position; a fresh sequence is plainly causal.
        is_causal = mask is None and length > 1
        # No dropout on attention probabilities: it pushes SDPA off its fused kernel (much slower training on
        # CPU, benchmarks/README.md); the residual-branch dropout in Block regularises at a fraction of the cost.
        if length == 1 and q.dtype == torch.bfloat16 and q.device.type == "cpu":
            # One decoded token: PyTorch's CPU kernel takes 4-6x longer in bf16 than in fp32 at 150-256 cached
            # positions (benchmarks/RESULTS.md), far more than widening the three to fp32 costs.
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=self.scale,
                                               enable_gqa=True).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
                                               enable_gqa=True)
        return self.proj(y.transpose(1, 2).reshape(batch, length, -1))


class MLP(nn.Module):
    """A gated MLP: SiLU gate (SwiGLU: Llama, Qwen) or tanh-approximated GELU gate (GeGLU: Gemma)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up = Linear(config.dim, 2 * config.ffn_dim, bias=False)
        self.down = Linear(config.ffn_dim, config.dim, bias=False)
        self.geglu = config.mlp == "geglu_tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        gate = F.gelu(gate, approximate="tanh") if self.geglu else F.silu(gate)
        return self.down(gate * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attention_norm = norm(config)
        self.attention = Attention(config, layer)
        self.mlp_norm = norm(config)
        self.mlp = MLP(config)
        # Gemma 3's sandwich: each branch's output is normalised too before it joins the residual stream,
        # which bounds what one layer can add to it.
        sandwich = config.norm_scheme == "sandwich"
        self.attention_post_norm = norm(config) if sandwich else None
        self.mlp_post_norm = norm(config) if sandwich else None
        self.dropout = float(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: DecodeCache | None = None, start: int = 0) -> torch.Tensor:
        mixed = self.attention(self.attention_norm(x), cos, sin, mask, cache, start)
        if self.attention_post_norm is not None:
            mixed = self.attention_post_norm(mixed)
        x = x + self._dropout(mixed)
        transformed = self.mlp(self.mlp_norm(x))
        if self.mlp_post_norm is not None:
            transformed = self.mlp_post_norm(transformed)
        return x + self._dropout(transformed)

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        # A plain check, not an nn.Identity: decoding calls this twice per layer per token.
        return dropout(x, self.dropout) if self.dropout and self.training else x


class MambaBlock(nn.Module):
    """Block with a Mamba-2 mixer in place of attention: same pre-norm residual layout, same MLP."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.mamba_norm = norm(config)
        self.mamba = Mamba2(config)
        self.mlp_norm = norm(config)
        self.mlp = MLP(config)
        self.dropout = float(config.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: DecodeCache | None = None, start: int = 0) -> torch.Tensor:
        """Block's signature; positions reach a Mamba-2 layer through its state, so cos, sin and mask go unused."""
        state = cache.mamba_states[self.layer] if cache is not None else None
        x = x + self._dropout(self.mamba(self.mamba_norm(x), state, start))
        return x + self._dropout(self.mlp(self.mlp_norm(x)))

    _dropout = Block._dropout


def build_block(config: ModelConfig, layer: int) -> Block | MambaBlock:
    return MambaBlock(config, layer) if config.is_mamba_layer(layer) else Block(config, layer)


class LanguageModel(nn.Module):
    """The token model every run but the fixed-point one is: embeddings, a stack of attention blocks, Mamba-2 blocks
    or both (`model.layer_pattern`), a final norm and the head. Its decoding state is a `DecodeCache`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(build_block(config, layer) for layer in range(config.n_layers))
        self.norm = norm(config)
        self.lm_head = Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight
        # Gemma multiplies embeddings by sqrt(dim) in the weights' dtype, as transformers does: a buffer, so a
        # model converted to bf16 rounds the factor the same way.
        scale = math.sqrt(config.dim) if config.embedding_scale == "sqrt_dim" else 1.0
        self.register_buffer("embedding_multiplier", torch.tensor(scale), persistent=False)
        self.scale_embeddings = config.embedding_scale != "none"
        # Tables of shape [position, 1, head_dim]: they broadcast over the heads of [batch, time, heads, head_dim].
        # RoPE scaling stretches the global layers' positions only; sliding-window layers never see far ones.
        for suffix, theta, scaling in (("", config.rope_theta, config), ("_local", config.rope_theta_local, None)):
            cos, sin = rope_tables(config.attention_head_dim, config.max_seq_len, theta, scaling)
            self.register_buffer(f"rope_cos{suffix}", cos.unsqueeze(1), persistent=False)
            self.register_buffer(f"rope_sin{suffix}", sin.unsqueeze(1), persistent=False)
        self.gradient_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.init_std
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.constant_(param, 1.0 - self.config.norm_weight_offset)  # a norm that scales by 1
            elif name.endswith("attention.qkv.bias"):
                nn.init.zeros_(param)
            elif name.endswith(("attention.proj.weight", "mlp.down.weight", "mamba.out_proj.weight")):
                # Residual-branch outputs are scaled down so the residual stream's variance does not
                # grow with depth (GPT-2 / nanoGPT).
                nn.init.normal_(param, mean=0.0, std=std / math.sqrt(2 * self.config.n_layers))
            elif name.endswith(Mamba2.OWN_INIT):
                continue
            else:
                nn.init.normal_(param, mean=0.0, std=std)
        for module in self.modules():
            if isinstance(module, Mamba2):
                module.reset_parameters()

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(idx)
        return x * self.embedding_multiplier.to(x.dtype) if self.scale_embeddings else x

    def _masks(self, length: int, start: int, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Boolean masks (True = attend) for global and sliding-window layers; None means plain causal."""
        total = start + length
        need_explicit = start > 0 and length > 1
        window = self.config.sliding_window
        if not need_explicit and (window == 0 or total <= window):
            return None, None
        query_pos = torch.arange(start, total, device=device).unsqueeze(1)
        key_pos = torch.arange(total, device=device).unsqueeze(0)
        causal = key_pos <= query_pos
        global_mask = causal if need_explicit else None
        local_mask = causal & (query_pos - key_pos < window) if window else global_mask
        return global_mask, local_mask

    def _slot_masks(self, step: SlotStep) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row masks [rows, 1, 1, limit] (True = attend) for global and sliding-window layers."""
        key_pos = torch.arange(step.limit, device=step.positions.device).unsqueeze(0)
        query_pos = step.positions.unsqueeze(1)
        causal = key_pos <= query_pos
        window = self.config.sliding_window
        local = causal & (query_pos - key_pos < window) if window else causal
        return causal[:, None, None, :], local[:, None, None, :]

    @torch.no_grad()
    def decode_slots(self, tokens: torch.Tensor, step: SlotStep) -> torch.Tensor:
        """Logits [rows, vocab] for one new token per row (`tokens` [rows, 1]), each at its row's position.

        Under no_grad, not inference_mode: torch.compile cannot write the cache's rows by index while inference
        mode is on (inference/decode_step.DecodeStep.slots compiles this)."""
        x = self.embed(tokens)
        global_mask, local_mask = self._slot_masks(step)
        # Tables [position, 1, head_dim] gathered to [rows, 1, 1, head_dim]: one position per row.
        rope_global = (self.rope_cos[step.positions].unsqueeze(1), self.rope_sin[step.positions].unsqueeze(1))
        rope_local = (self.rope_cos_local[step.positions].unsqueeze(1),
                      self.rope_sin_local[step.positions].unsqueeze(1))
        for index, block in enumerate(self.layers):
            sliding = self.config.is_sliding_layer(index)
            cos, sin = rope_local if sliding else rope_global
            x = block(x, cos, sin, local_mask if sliding else global_mask, step, 1)  # type: ignore[arg-type]
        step.write_back()
        return self.lm_head(self.norm(x))[:, -1]

    def forward(self, idx: torch.Tensor, cache: DecodeCache | None = None, start: int = 0,
                last_only: bool = False, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for `idx` [batch, time]; with `cache`, positions start at `start` and keys are kept.

        `keep` (bool, [batch, time]): logits of those positions only, as [kept, vocab] (training on chat data).
        """
        length = idx.size(1)
        if start + length > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + length} tokens exceeds max_seq_len {self.config.max_seq_len}")
        x = self.embed(idx)
        global_mask, local_mask = self._masks(length, start, idx.device)
        rope_global = (self.rope_cos[start:start + length], self.rope_sin[start:start + length])
        rope_local = (self.rope_cos_local[start:start + length], self.rope_sin_local[start:start + length])
        for index, block in enumerate(self.layers):
            sliding = self.config.is_sliding_layer(index)
            cos, sin = rope_local if sliding else rope_global
            mask = local_mask if sliding else global_mask
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, cache, start)
        if last_only:
            x = x[:, -1:]
        elif keep is not None:
            x = x[keep]
        return self.lm_head(self.norm(x))


def num_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, non-embedding) counts of unique parameters; tied weights count once."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for name, p in model.named_parameters() if "tok_embeddings" in name)
    if isinstance(model, LanguageModel) and not model.config.tie_embeddings:
        embedding += model.lm_head.weight.numel()
    return total, total - embedding


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), PaLM appendix B style."""
    mamba_layers = config.layer_pattern.count("M")
    attention_layers = config.n_layers - mamba_layers
    matmul_params = (attention_layers * config.dim * (2 * config.q_dim + 2 * config.kv_dim)
                     + config.n_layers * 3 * config.dim * config.ffn_dim)
    matmul_params += config.vocab_size * config.dim
    # QK^T and AV: seq_len * dim multiply-adds each per token, over the whole sequence as PaLM (appendix B) and
    # nanoGPT count them (6x this is their 12*L*T*d), though a causal mask does half: MFU compares with theirs.
    attention = 2 * attention_layers * seq_len * config.q_dim
    if not mamba_layers:
        return 6 * matmul_params + 6 * attention
    inner, state = config.mamba_inner, config.mamba_state_size
    matmul_params += mamba_layers * config.dim * (3 * inner + 2 * state + config.mamba_heads)
    # SSD multiply-adds per token: C.B scores and their weighting of x within a chunk (computed whole, not
    # halved), then writing the chunk's state and reading the carried one.
    ssd = mamba_layers * (config.mamba_chunk_size * (state + inner) + 2 * inner * state)
    return 6 * matmul_params + 6 * attention + 6 * ssd
