"""Speed measured like llama-bench: prompt processing (pp), token generation (tg) and training tokens/sec.

Every test runs once to warm up and then `repetitions` times (evaluation/timing.py); each repetition is one
sample in tokens/sec, and the report keeps the samples besides their mean and standard deviation so a reader can
judge the spread.

tg times the model alone: after each step the next token is the greedy argmax, taken on the device and fed
straight back, so no sampling and no host round trip are in the number (llama-bench excludes sampling too).
The training test runs the optimizer step `cogni train` runs (train.step: forward, masked cross-entropy and
backward on each of the config's grad_accum_steps micro-batches at its micro-batch size and sequence length,
then gradient clipping and the config's optimizer step: fused AdamW, or Muon with `train.optimizer = muon`), in
its precision. Counting the whole step matters on a GPU, where the optimizer's fixed cost would weigh several times
too much against a single micro-batch.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from cognimamba.config.profiles import get_profile
from cognimamba.config.schema import Config
from cognimamba.errors import CogniError
from cognimamba.evaluation.timing import warm_then_repeat
from cognimamba.inference.decode_step import DecodeStep
from cognimamba.inference.weights import apply_weight_format, check_weight_format
from cognimamba.model.build import MODEL_CLASSES, Model, build_model, new_cache, training_flops_per_token
from cognimamba.model.linear import measure_matmul_peak
from cognimamba.model.transformer import DecodeCache, num_parameters
from cognimamba.runs.loading import load_run
from cognimamba.system import hardware
from cognimamba.train.optim import build_optimizer
from cognimamba.train.step import autocast_for, training_step

TG_NOTE = ("tg = decode with the KV cache; the next token is a greedy argmax on the device, so sampling is "
           "excluded (as in llama-bench); batch-1 tg on CPU takes as many threads as chat does for this model "
           "(one per 32 MB of weights; -t sets it)")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass
class BenchOptions:
    """llama-bench's -p/-n/-b lists (every combination runs; 0 skips that kind of test) and -r."""

    prompt_lengths: list[int] = field(default_factory=lambda: [512])
    generation_lengths: list[int] = field(default_factory=lambda: [128])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    repetitions: int = 5
    train: bool = False
    # True: torch.compile the decoding step (tg) and the training step; False: neither; None: tg eager,
    # training as the config says (GPU profiles compile, as `cogni train` does).
    compile: bool | None = None
    seed: int = 0
    threads: int | None = None  # -t: decoding threads too (default: decode_threads' choice for the model)

    def tests(self) -> list[tuple[str, int, int, int]]:
        """(kind, n_prompt, n_gen, batch) for every test, in the order they run."""
        planned = [("pp", p, 0, b) for p in self.prompt_lengths if p > 0 for b in self.batch_sizes]
        planned += [("tg", 0, n, b) for n in self.generation_lengths if n > 0 for b in self.batch_sizes]
        return planned

    @property
    def context_needed(self) -> int:
        return max([*self.prompt_lengths, *self.generation_lengths, 1])


@dataclass
class BenchResult:
    test: str  # pp512, tg128, train256
    n_prompt: int
    n_gen: int
    batch: int
    dtype: str
    samples: list[float]  # tokens/sec, one per repetition
    mfu: float | None = None  # training only: share of the measured matmul peak
    peak_memory_bytes: int | None = None  # training only: CUDA max allocated, or the process's peak RSS on CPU
    peak_reserved_bytes: int | None = None  # training on CUDA: what the caching allocator held at most
    warmup_seconds: float | None = None  # training, and tg with --compile: the warm-up run, compiling included
    compiled: bool = False  # whether the step ran through torch.compile
    grad_accum: int = 1  # training: micro-batches per optimizer step (each sample counts all of their tokens)
    compile_problem: str | None = None  # training: why train.compile could not compile here (not reported as data)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def std(self) -> float:
        return statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"test": self.test, "n_prompt": self.n_prompt, "n_gen": self.n_gen,
                               "batch": self.batch, "dtype": self.dtype, "unit": "tokens/s", "mean": self.mean,
                               "std": self.std, "samples": self.samples}
        if self.test.startswith("train"):
            row.update(mfu=self.mfu, peak_memory_bytes=self.peak_memory_bytes, compiled=self.compiled,
                       grad_accum=self.grad_accum)
            if self.peak_reserved_bytes is not None:
                row["peak_reserved_bytes"] = self.peak_reserved_bytes
        if self.warmup_seconds is not None:
            row["warmup_seconds"] = self.warmup_seconds
        return row


@dataclass
class BenchModel:
    """The model under test; `config` is the run's or profile's own (training uses its batch and length)."""

    name: str
    config: Config
    model: Model
    device: torch.device
    dtype: torch.dtype  # of the activations and the KV cache
    weights: str  # "trained" (a run dir) or "random" (a profile)
    weight_format: str = "fp32"  # fp32, bf16 or int8 (inference/weights.py)


@dataclass
class BenchReport:
    model: str
    weights: str
    parameters: int
    device: str
    device_name: str
    threads: int
    results: list[BenchResult]
    peak_flops: float | None = None  # measured matmul FLOP/s in the training dtype (with --train)
    memory_kind: str = ""
    notes: list[str] = field(default_factory=list)  # what a reader needs to compare these numbers fairly

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weights": self.weights, "parameters": self.parameters, "device": self.device,
                "device_name": self.device_name, "threads": self.threads, "notes": self.notes,
                "peak_flops": self.peak_flops, "memory_kind": self.memory_kind,
                "tests": [result.to_dict() for result in self.results]}


def parse_int_list(values: list[str] | None, option: str, default: list[int], minimum: int = 0) -> list[int]:
    """`-p 128,256 -p 512` -> [128, 256, 512], as llama-bench reads its list options."""
    if not values:
        return list(default)
    numbers = []
    for value in values:
        for part in str(value).split(","):
            text = part.strip()
            if not text:
                continue
            try:
                number = int(text)
            except ValueError:
                raise CogniError(f"{option} {value!r}: expected whole numbers separated by commas, e.g. "
                                 f"{option} 128,512") from None
            if number < minimum:
                raise CogniError(f"{option} {number}: must be >= {minimum}")
            numbers.append(number)
    if not numbers:
        raise CogniError(f"{option}: give at least one number")
    return list(dict.fromkeys(numbers))


def inference_dtype(requested: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 when asked, on a CPU with native bf16); on CUDA bf16 where supported, else fp16."""
    if requested not in PRECISIONS:
        raise CogniError(f"--dtype {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if device.type != "cuda" and requested == "fp16":
        raise CogniError(f"--dtype fp16: fp16 is used on CUDA GPUs only; on {device.type} use fp32 (or bf16 on a "
                         "CPU with AVX512-BF16 or AMX)")
    if device.type not in ("cuda", "cpu") and requested == "bf16":
        raise CogniError(f"--dtype bf16: not supported on {device.type}; use fp32")
    return hardware.pick_dtype(requested, device, setting="--dtype")


def with_context(model: Model, length: int) -> Model:
    """The same weights with RoPE tables long enough for `length` positions.

    Speed does not depend on what the weights learned, so pp512 runs on a model trained on shorter
    sequences, as llama-bench does; the context only bounds the KV cache and the RoPE tables.
    """
    if length <= model.config.max_seq_len:
        return model
    if not isinstance(model, MODEL_CLASSES):
        raise CogniError(f"the model holds {model.config.max_seq_len} positions; use -p/-n values up to that")
    parameter = next(model.parameters())
    longer = build_model(replace(model.config, max_seq_len=length))
    longer.load_state_dict(model.state_dict())
    return longer.to(device=parameter.device, dtype=parameter.dtype).eval()


def load_bench_model(run: Path | None, profile: str | None, device: torch.device, dtype: torch.dtype,
                     context: int, seed: int = 0, weight_format: str = "fp32") -> BenchModel:
    """A run dir's model, or a random-weight model of a profile (speed does not depend on the weights), with
    its weights in `weight_format` (bf16 and int8 as `cogni chat --weights` holds them)."""
    check_weight_format(weight_format, device)  # before a large model loads
    if (run is None) == (profile is None):
        raise CogniError("give a run dir (cogni bench RUN) or --profile NAME for a random-weight model, not both")
    if run is not None:

        loaded = load_run(run, device=device, dtype=dtype)
        config, model, name = loaded.config, loaded.model, Path(run).name
    else:

        config = get_profile(str(profile))
        torch.manual_seed(seed)
        with torch.device(device):
            model = build_model(replace(config.model, max_seq_len=max(context, config.model.max_seq_len)))
        model.to(dtype=dtype)
        name = config.profile
    model = apply_weight_format(with_context(model, context), weight_format)
    dtype = next(model.parameters()).dtype
    return BenchModel(name=name, config=config, model=model, device=device, dtype=dtype,
                      weights="random" if run is None else "trained", weight_format=weight_format)


def _random_tokens(shape: tuple[int, ...], vocab_size: int, device: torch.device, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, shape, generator=generator).to(device)


def measure_prefill(bench: BenchModel, n_prompt: int, batch: int, repetitions: int,
                    on_run: Callable[[], None] = lambda: None, seed: int = 0) -> list[float]:
    """Tokens/sec of one prompt of `n_prompt` tokens per sequence, filling a fresh KV cache."""
    model = bench.model
    tokens = _random_tokens((batch, n_prompt), model.config.vocab_size, bench.device, seed)
    cache = new_cache(model.config, batch, n_prompt, bench.device, bench.dtype)

    @torch.inference_mode()
    def run() -> None:
        model(tokens, cache=cache, start=0, last_only=True)

    _, seconds = warm_then_repeat(run, repetitions, bench.device, on_run)
    return [batch * n_prompt / each for each in seconds]


def measure_decode(bench: BenchModel, n_gen: int, batch: int, repetitions: int,
                   on_run: Callable[[], None] = lambda: None, seed: int = 0,
                   compile: bool = False, threads: int | None = None) -> tuple[list[float], float]:
    """Tokens/sec of `n_gen` single-token steps from an empty cache, greedy argmax kept on the device.

    One sequence steps as chat does (DecodeStep: its thread count, and torch.compile with `compile`); several
    step as `cogni serve` decodes its slots (DecodeStep.slots: each row at its own position, here all at the
    same one; compiled with `compile`, as serve compiles them). Returns the samples and the warm-up run's
    seconds, which hold the compile.
    """
    model = bench.model
    first = _random_tokens((batch, 1), model.config.vocab_size, bench.device, seed)
    cache = new_cache(model.config, batch, n_gen, bench.device, bench.dtype)
    step_input = torch.empty_like(first)
    step = DecodeStep(model, bench.device, compile, batch, threads)
    slots = batch > 1 and isinstance(cache, DecodeCache)
    rows = torch.arange(batch, device=bench.device)

    def logits_at(position: int) -> torch.Tensor:
        if not slots:
            return step(step_input, cache, position)
        positions = torch.full((batch,), position, device=bench.device)
        with hardware.intra_op_threads(threads):
            return step.slots(step_input, cache, rows, positions)  # type: ignore[arg-type]

    # Compiled code cannot write an inference-mode cache's rows by index (LanguageModel.decode_slots).
    @torch.no_grad() if compile else torch.inference_mode()
    def run() -> None:
        step_input.copy_(first)
        for position in range(n_gen):
            torch.argmax(logits_at(position), dim=-1, keepdim=True, out=step_input)

    warmup_seconds, seconds = warm_then_repeat(run, repetitions, bench.device, on_run)
    if step.compile_error:
        raise CogniError(f"--compile: torch.compile failed ({step.compile_error}); run without --compile")
    return [batch * n_gen / each for each in seconds], warmup_seconds


def train_dtype(config: Config, requested: str, device: torch.device) -> torch.dtype:
    """The autocast dtype training would use: the config's precision unless --dtype names one."""
    return hardware.pick_dtype(config.train.precision if requested == "auto" else requested, device)


def measure_training(config: Config, device: torch.device, compute_dtype: torch.dtype, repetitions: int,
                     on_run: Callable[[], None] = lambda: None, seed: int = 0) -> BenchResult:
    """Training tokens/sec of a fresh model of this config, one optimizer step per repetition."""
    settings = config.train
    batch, seq_len, accum = settings.micro_batch_size, config.model.max_seq_len, settings.grad_accum_steps
    # On CUDA the peak counts training's own memory: the pp/tg model, still loaded, is not part of it.
    hardware.reset_peak_memory(device)
    held_before = hardware.cuda_memory_held(device)
    torch.manual_seed(seed)
    with torch.device(device):
        model = build_model(config.model)
    model.gradient_checkpointing = settings.grad_checkpointing
    model.train()
    optimizer = build_optimizer(model, settings, device)
    scaler = torch.amp.GradScaler(device.type) if compute_dtype == torch.float16 else None
    autocast = autocast_for(device, compute_dtype)
    forward, compile_problem = hardware.compiled_if_possible(model, device, settings.compile)
    tokens = _random_tokens((batch, seq_len + 1), config.model.vocab_size, device, seed)
    micro_batches = [(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())] * accum  # speed is data-blind

    warmup_seconds, seconds = warm_then_repeat(
        lambda: training_step(forward, optimizer, micro_batches, autocast, settings.grad_clip, scaler),
        repetitions, device, on_run)
    samples = [accum * batch * seq_len / each for each in seconds]
    peak = hardware.peak_memory_bytes(device)
    reserved = hardware.cuda_peak_reserved(device)
    return BenchResult(test=f"train{seq_len}", n_prompt=seq_len, n_gen=0, batch=batch,
                       dtype=DTYPE_NAMES[compute_dtype], samples=samples, warmup_seconds=warmup_seconds,
                       compiled=forward is not model, compile_problem=compile_problem, grad_accum=accum,
                       peak_memory_bytes=None if peak is None else peak - held_before[0],
                       peak_reserved_bytes=None if reserved is None else reserved - held_before[1])


def run_bench(bench: BenchModel, options: BenchOptions, requested_dtype: str = "auto",
              on_run: Callable[[str], None] = lambda description: None) -> BenchReport:
    """Every pp/tg combination, then training with `options.train`; `on_run(test)` after each run."""
    results = []
    dtype_name = DTYPE_NAMES[bench.dtype] if bench.weight_format == "fp32" else bench.weight_format
    measures_tg = any(kind == "tg" for kind, *_ in options.tests())
    notes = [TG_NOTE] if measures_tg else []
    trained_context = bench.config.model.max_seq_len
    if bench.model.config.max_seq_len > trained_context:
        notes.append(f"the model holds {trained_context} positions; RoPE and the KV cache were extended to "
                     f"{bench.model.config.max_seq_len} for these tests (speed does not depend on it)")
    for kind, n_prompt, n_gen, batch in options.tests():
        test = f"pp{n_prompt}" if kind == "pp" else f"tg{n_gen}"

        def tick(test: str = test) -> None:
            on_run(test)

        warmup_seconds = None
        if kind == "pp":
            samples = measure_prefill(bench, n_prompt, batch, options.repetitions, tick, options.seed)
        else:
            samples, warmup = measure_decode(bench, n_gen, batch, options.repetitions, tick, options.seed,
                                             bool(options.compile), options.threads)
            warmup_seconds = warmup if options.compile else None
        results.append(BenchResult(test, n_prompt, n_gen, batch, dtype_name, samples,
                                   warmup_seconds=warmup_seconds))
    if options.compile and measures_tg:
        notes.append("tg steps ran through torch.compile; the warm-up run, which compiles, is not in the samples "
                     "(see warmup_seconds); pp is eager")
    peak_flops = None
    if options.train:
        compute_dtype = train_dtype(bench.config, requested_dtype, bench.device)
        peak_flops = measure_matmul_peak(bench.device, compute_dtype)
        on_run("matmul peak")
        config = bench.config
        if options.compile is not None:
            config = replace(config, train=replace(config.train, compile=options.compile))
        result = measure_training(config, bench.device, compute_dtype, options.repetitions,
                                  lambda: on_run("train"), options.seed)
        result.mfu = training_flops_per_token(config.model, result.n_prompt) * result.mean / peak_flops
        results.append(result)
        if result.compiled:
            notes.append("the training step ran through torch.compile (train.compile; --no-compile measures it "
                         "eager); its warm-up run, which compiles, is not in the samples")
        elif result.compile_problem:
            notes.append(f"train.compile is on, but {result.compile_problem}; training ran eagerly")
    return BenchReport(model=bench.name, weights=bench.weights, parameters=num_parameters(bench.model)[0],
                       device=bench.device.type, device_name=hardware.device_name(bench.device),
                       threads=hardware.cpu_threads(), results=results, peak_flops=peak_flops, notes=notes,
                       memory_kind="CUDA max allocated" if bench.device.type == "cuda" else "peak RSS of the process")


def total_runs(options: BenchOptions) -> int:
    """Runs `run_bench` reports through `on_run`, for a progress bar."""
    runs = len(options.tests()) * (options.repetitions + 1)
    return runs + (options.repetitions + 2 if options.train else 0)
