"""Hardware profiles: named presets of the one config, and the memory estimate that justifies them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cognimamba.config.schema import Config, DataConfig, GenerationConfig, ModelConfig, TrainConfig, apply_family
from cognimamba.errors import CogniError

GIB = 1024**3


def _cpu() -> Config:
    # Small enough to learn visibly on 2 cores in minutes; shaped by held-out bits/byte after 10 minutes on
    # TinyStories (benchmarks/RESULTS.md, "CPU profile sweeps" and issue 32's screen on the 2 MiB slice).
    return Config(
        profile="cpu",
        # Four layers, not six: in ten minutes they see 1.5x the tokens, which beat the depth on both slices.
        # Dropout up to 0.3, by the passes over the data: on the 1 MB slice ten minutes pass over it about 14 times
        # and without dropout the model memorises it (1.364 against 1.234 bits/byte); on 2 MiB (about 6 passes)
        # 0.1 beat 0.3. So none in the first pass, then rising to 0.3 over the next four (train/schedule.py):
        # ten minutes on 2 MiB gave 1.229 against 1.263 for 0.3 throughout, and 1.205 against 1.208 on 1 MB.
        model=ModelConfig(vocab_size=4096, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=688,
                          max_seq_len=256, dropout=0.3),
        # bf16 autocast where the CPU multiplies it natively (1.3x the steps), fp32 elsewhere. Micro-batch 8 led at
        # three minutes but not at ten (1.232 against 1.229, medians of three seeds on 2 MiB), so 16 stays.
        train=TrainConfig(lr=3e-3, warmup_steps=100, max_steps=2000, micro_batch_size=16, grad_accum_steps=1,
                          precision=budget_cpu_precision(), eval_every=100, save_every=250, eval_batches=10,
                          dropout_ramp_passes=4.0),
    )


def _gpu(name: str, model: ModelConfig, micro_batch: int, accum: int, checkpointing: bool) -> Config:
    # Micro-batches are sized from measured peaks (benchmarks/README.md) to leave room for a desktop on the
    # card: larger ones keep a fast GPU from waiting on Python to launch kernels, and where memory is short a
    # smaller micro-batch costs less than checkpointing's recompute. torch.compile fuses the elementwise work
    # between matmuls (speed-ups in benchmarks/README.md); its first step compiles for a while. Without Triton
    # training runs eagerly (hardware.compile_unavailable).
    return Config(
        profile=name,
        model=model,
        train=TrainConfig(lr=6e-4, warmup_steps=500, max_steps=20000, micro_batch_size=micro_batch,
                          grad_accum_steps=accum, precision="auto", grad_checkpointing=checkpointing,
                          compile=True, eval_every=500, save_every=1000, eval_batches=50),
    )


def _4gb() -> Config:
    model = ModelConfig(vocab_size=16384, dim=768, n_layers=8, n_heads=12, n_kv_heads=3, ffn_dim=2048,
                        max_seq_len=256)
    return _gpu("4gb", model, micro_batch=8, accum=4, checkpointing=False)


def _6gb() -> Config:
    model = ModelConfig(vocab_size=32000, dim=1024, n_layers=12, n_heads=16, n_kv_heads=4, ffn_dim=2816,
                        max_seq_len=512)
    return _gpu("6gb", model, micro_batch=2, accum=16, checkpointing=False)


def _8gb() -> Config:
    # Same model as 6gb; the extra memory buys twice the context and four times the tokens per micro-batch.
    model = ModelConfig(vocab_size=32000, dim=1024, n_layers=12, n_heads=16, n_kv_heads=4, ffn_dim=2816,
                        max_seq_len=1024)
    return _gpu("8gb", model, micro_batch=4, accum=4, checkpointing=False)


def _12gb() -> Config:
    model = ModelConfig(vocab_size=32000, dim=1280, n_layers=16, n_heads=20, n_kv_heads=5, ffn_dim=3584,
                        max_seq_len=1024)
    return _gpu("12gb", model, micro_batch=8, accum=4, checkpointing=True)


PROFILES = {"cpu": _cpu, "4gb": _4gb, "6gb": _6gb, "8gb": _8gb, "12gb": _12gb}
BUDGET_GIB = {"4gb": 4.0, "6gb": 6.0, "8gb": 8.0, "12gb": 12.0}
# The longest context a fine-tune on chat data raises model.max_seq_len to unasked (train/finetune_defaults.py).
# The micro-batch shrinks so a step keeps its tokens and memory stays near the profile's; attention's cost per
# token still grows with the context, so slower profiles stop sooner.
FINETUNE_MAX_SEQ_LEN = {"cpu": 1024, "4gb": 1024, "6gb": 2048, "8gb": 2048, "12gb": 4096}


def _gemma3_270m() -> ModelConfig:
    """Gemma 3 270M's exact shape (google/gemma-3-270m's config.json): 268M parameters, 168M of them the 262k-token
    embedding. The context is 1024 for training from scratch (the release's is 32768); a run takes its vocabulary
    from the tokenizer it is trained with, so with a smaller one the embedding, and the memory, shrink."""
    model = ModelConfig(vocab_size=262_144, dim=640, n_layers=18, n_heads=4, n_kv_heads=1, head_dim=256,
                        ffn_dim=2048, max_seq_len=1024)
    apply_family(model, "gemma3")  # window 512, every 6th layer global, thetas 10k / 1M, QK-norm, (1 + w) norms
    model.attention_scale = 256.0  # query_pre_attn_scalar
    return model


# Named models that train on a hardware profile's settings (`--profile gemma3-270m`), not profiles of their own.
MODEL_PRESETS = {"gemma3-270m": _gemma3_270m}


MIN_PRESET_CONTEXT = 256


def preset_on_profile(preset: str, profile: str, vocab_size: int | None = None) -> Config | None:
    """A preset's model with `profile`'s training settings and context; where the memory estimate is over the
    profile's budget, the micro-batch halves (accumulation doubles: the same tokens per step), then the context
    does, down to MIN_PRESET_CONTEXT. None where even that does not fit. `vocab_size`: a tokenizer's instead."""
    config = PROFILES[profile]()
    config.model = dataclasses.replace(MODEL_PRESETS[preset](), dropout=config.model.dropout,
                                       max_seq_len=config.model.max_seq_len)
    if vocab_size:
        config.model.vocab_size = vocab_size
    config.profile = preset
    budget = BUDGET_GIB.get(profile)
    while budget is not None and estimate_memory(config, on_gpu=True).total > budget * GIB:
        if config.train.micro_batch_size > 1:
            config.train.micro_batch_size //= 2
            config.train.grad_accum_steps *= 2
        elif config.model.max_seq_len > MIN_PRESET_CONTEXT:
            config.model.max_seq_len //= 2
            config.train.grad_accum_steps *= 2
        else:
            return None
    return config


def _model_preset(name: str) -> Config:
    """The preset fitted to the GPU found, else to the largest GPU profile (on a CPU: its settings, for a plan)."""
    detected, largest = detect_profile(), list(BUDGET_GIB)[-1]
    for profile in dict.fromkeys([detected, largest]):
        fitted = preset_on_profile(name, profile) if profile in BUDGET_GIB else None
        if fitted is not None:
            return fitted
    raise CogniError(f"--profile {name}: its model does not fit the {largest} profile's memory even one sequence of "
                     f"{MIN_PRESET_CONTEXT} tokens at a time")


def detect_profile() -> str:
    """Largest GPU profile whose budget fits the detected GPU memory; `cpu` without a GPU."""
    import torch  # noqa: PLC0415 (the config and `cogni --help` load without torch)

    if not torch.cuda.is_available():
        return "cpu"
    total_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    fitting = [name for name, budget in BUDGET_GIB.items() if budget <= total_gib + 0.5]
    return fitting[-1] if fitting else "cpu"


def budget_cpu_precision() -> str:
    """The precision of CPU runs on a time budget (the `cpu` profile, so quickstart and the recipes): bf16
    autocast where the CPU computes it natively, which fits 1.2-1.4x the steps in the same minutes
    (benchmarks/RESULTS.md); fp32 elsewhere. A run's config.json keeps the precision it trained in."""
    from cognimamba.system.hardware import cpu_has_native_bf16  # noqa: PLC0415 (it imports torch)

    return "bf16" if cpu_has_native_bf16() else "fp32"


def get_profile(name: str) -> Config:
    if name == "auto":
        name = detect_profile()
    if name not in PROFILES and name not in MODEL_PRESETS:
        raise CogniError(f"unknown profile {name!r}; choose one of {', '.join([*PROFILES, 'auto'])} (or a named "
                         f"model on the GPU found: {', '.join(MODEL_PRESETS)})")
    config = PROFILES[name]() if name in PROFILES else _model_preset(name)
    config.profile = name
    config.data = DataConfig()
    config.generation = GenerationConfig()
    return config


def finetune_context_limit(name: str) -> int:
    """How far a fine-tune may raise the context on its own; a profile not listed keeps its own context."""
    if name == "auto":
        name = detect_profile()
    return FINETUNE_MAX_SEQ_LEN.get(name) or get_profile(name).model.max_seq_len


def mamba_parameters(model: ModelConfig) -> int:
    """One Mamba-2 mixer: in_proj, depthwise conv with bias, dt_bias, A_log and D per head, gated norm, out_proj."""
    inner, heads = model.mamba_inner, model.mamba_heads
    conv_channels = inner + 2 * model.mamba_state_size
    return (model.dim * (inner + conv_channels + heads) + conv_channels * (model.mamba_conv_width + 1)
            + 3 * heads + inner + inner * model.dim)


def fixed_point_parameter_counts(model: ModelConfig) -> tuple[int, int]:
    """model.arch = fixed_point: the embedding and its norm, the gated updater layers, the token head."""
    layers, context, hidden = model.fixed_point_shape
    updater = layers * (4 * context * hidden + context)
    head = 2 * context + 3 * context * hidden + context * model.vocab_size
    non_embedding = context + updater + head
    return non_embedding + model.vocab_size * context, non_embedding


def parameter_counts(model: ModelConfig) -> tuple[int, int]:
    """(total, non-embedding) parameter counts, computed from the shapes alone."""
    if model.is_fixed_point:
        return fixed_point_parameter_counts(model)
    qkv_rows = model.q_dim + 2 * model.kv_dim
    attention = model.dim * qkv_rows + model.q_dim * model.dim + (qkv_rows if model.qkv_bias else 0)
    mlp = 3 * model.dim * model.ffn_dim
    norms = (4 if model.norm_scheme == "sandwich" else 2) * model.dim
    norms += 2 * model.attention_head_dim if model.qk_norm else 0
    per_layer = attention + mlp + norms
    mamba_layers = model.layer_pattern.count("M")
    per_mamba_layer = mamba_parameters(model) + mlp + 2 * model.dim if mamba_layers else 0
    non_embedding = (model.n_layers - mamba_layers) * per_layer + mamba_layers * per_mamba_layer + model.dim
    embedding = model.vocab_size * model.dim * (1 if model.tie_embeddings else 2)
    return non_embedding + embedding, non_embedding


@dataclass
class MemoryEstimate:
    """Peak training memory in bytes, by what holds it."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int
    logits: int
    runtime: int
    checkpointing: bool

    @property
    def total(self) -> int:
        acts = self.activations_checkpointed if self.checkpointing else self.activations
        return self.weights + self.gradients + self.optimizer + acts + self.logits + self.runtime


def mamba_layer_activation_bytes(model: ModelConfig, act_bytes: int) -> int:
    """Bytes per token one Mamba-2 layer saves for backward: norms and MLP as in an attention layer, plus the
    mixer, whose scan runs in fp32 (dt, the decays and states are fp32). The mixer's coefficients are fitted
    to the tensors autograd saves on CPU in fp32 (tests/model/test_mamba2.py checks the fit); per token they
    grow with the inner width, the state, the within-chunk decays (heads x chunk) and the chunk states."""
    inner, state, chunk = model.mamba_inner, model.mamba_state_size, model.mamba_chunk_size
    mixer = 4 * (2 * model.dim + 14 * inner + 24 * state + 3 * model.mamba_heads * chunk + 2 * inner * state // chunk)
    return 8 * model.dim + act_bytes * (2 * model.dim + 4 * model.ffn_dim) + mixer


def estimate_memory(config: Config, on_gpu: bool | None = None) -> MemoryEstimate:
    """Peak memory of one training micro-step.

    fp32 master weights, fp32 grads and two AdamW moments (16 bytes/param), plus the half-precision
    weight copies autocast caches. Activations count the tensors each block saves for backward;
    checkpointing keeps only each block's input plus one block being recomputed. Logits count the
    half-precision output, the fp32 log-softmax saved by cross-entropy and its fp32 gradient.
    """
    model = config.model
    gpu = config.profile != "cpu" if on_gpu is None else on_gpu
    total, _ = parameter_counts(model)
    half = gpu and config.train.precision in ("auto", "bf16", "fp16")
    act_bytes = 2 if half else 4
    tokens = config.train.micro_batch_size * model.max_seq_len
    if model.is_fixed_point:
        return fixed_point_memory(config, total, tokens, act_bytes, gpu)
    q_dim, kv_dim = model.q_dim, model.kv_dim
    # fp32 residual and norm inputs (4 bytes; a sandwich saves two more norms' inputs), the rotated queries and
    # keys (fp32: the RoPE tables are), plus the tensors saved in the compute dtype. Checked against CUDA max
    # allocated on an H200 (benchmarks/README).
    norm_inputs = 16 * model.dim if model.norm_scheme == "sandwich" else 8 * model.dim
    per_token_layer = (norm_inputs + 4 * (q_dim + kv_dim)
                       + act_bytes * (4 * model.dim + q_dim + kv_dim + 2 * (q_dim + 2 * kv_dim) + 4 * model.ffn_dim))
    mamba_layers = model.layer_pattern.count("M")
    attention_layers = model.n_layers - mamba_layers
    per_token_mamba_layer = mamba_layer_activation_bytes(model, act_bytes) if mamba_layers else 0
    activations = tokens * (per_token_layer * attention_layers + per_token_mamba_layer * mamba_layers)
    largest_layer = max(per_token_layer if attention_layers else 0, per_token_mamba_layer)
    checkpointed = tokens * 4 * model.dim * model.n_layers + tokens * largest_layer
    logits = tokens * model.vocab_size * (act_bytes + 4 + 4)
    return MemoryEstimate(
        weights=total * (4 + (2 if half else 0)),
        gradients=total * 4,
        optimizer=total * 8,
        activations=activations,
        activations_checkpointed=checkpointed,
        logits=logits,
        runtime=int(0.6 * GIB) if gpu else 0,  # CUDA context, cuBLAS workspace, allocator slack
        checkpointing=config.train.grad_checkpointing,
    )


def fixed_point_memory(config: Config, total: int, tokens: int, act_bytes: int, gpu: bool) -> MemoryEstimate:
    """model.arch = fixed_point: phase 1 keeps one pass's updater activations at a time (each pass's backward
    runs before the next); phase 2, the head's, plus the logits. Nothing to checkpoint."""
    layers, context, hidden = config.model.fixed_point_shape
    updater = layers * (8 * context + 3 * hidden) * 4  # fp32 context, gate and candidate; hidden in the compute dtype
    head = (4 * context + 3 * hidden) * act_bytes
    activations = tokens * max(updater, head)
    return MemoryEstimate(weights=total * (4 + (2 if act_bytes == 2 else 0)), gradients=total * 4,
                          optimizer=total * 8, activations=activations, activations_checkpointed=activations,
                          logits=tokens * config.model.vocab_size * (act_bytes + 4 + 4),
                          runtime=int(0.6 * GIB) if gpu else 0, checkpointing=config.train.grad_checkpointing)


def tokens_per_step(config: Config, world_size: int = 1) -> int:
    return config.train.micro_batch_size * config.train.grad_accum_steps * config.model.max_seq_len * world_size
