"""Does the `cpu` profile learn more in N CPU-seconds than a plain transformers Llama loop on the same token ids?

    pip install -e '.[bench]'                       # transformers, the only extra this needs
    cogni prepare ../shared/data/tinystories_train_2mib.txt --val ../shared/data/tinystories_valid.txt \\
        --vocab-size 4096 --out data/ts2mib
    python benchmarks/quality_vs_hf.py --data data/ts2mib                   # 600 s a run, seeds 0,1,2, both sides
    python benchmarks/quality_vs_hf.py --data data/ts2mib --seconds 180 --only cogni --set model.dropout=0.1
    python benchmarks/quality_vs_hf.py --data data/ts2mib --seconds 20 --seeds 0   # a smoke run

For every seed, one after the other (which side goes first alternates from seed to seed, so a drift in the
machine's speed touches both alike):

- hf:    a plain `transformers.LlamaForCausalLM` (4 layers x 256 by default, fp32, SDPA, no dropout) trained in
         this process by a plain loop: torch AdamW, linear warmup over --hf-warmup-steps, then cosine to
         --hf-min-lr-ratio of the peak by the clock, gradient clipping, random windows of --hf-seq-len tokens
         from the data dir's train.bin (cognimamba's `TokenWindows`, the sampler `cogni train` reads with),
         --hf-batch windows a step, until --seconds of training have passed. Its optimizer settings default to
         the `cpu` profile's, so what differs is the shape, the dropout and the code.
- cogni: `cogni train --profile P --data DATA --max-time Ns --set train.seed=S [--set ...]` as a subprocess with
         a temporary COGNI_HOME and run dir, as a user runs it (its clock counts its own validations).

Both sides are scored by one reader, `cognimamba.evaluation.checks.eval_on_data` (what `cogni test-model` reports):
bits/byte over every token of the data dir's val.bin, in non-overlapping windows of the model's context, against
the val text's UTF-8 bytes. The trained HF weights are read into our LanguageModel through the import names
(`interop.hf_names.from_hf_state_dict`) after a check that both give the same logits. Both sides use --threads
CPU threads. The table: side, seed, steps, tokens, tokens/s, bits/byte; then each side's median and seed spread
(max - min), and the ratio cogni / hf of the medians (below 1: the profile is better). Run it on an otherwise
idle machine: the step count in a time budget is the machine's to decide.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the cogni CLI sets both (system/openmp.py), before torch
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import torch
import torch.nn.functional as F
from torch import nn

from cognimamba.config.schema import Config, ModelConfig
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.evaluation.checks import eval_on_data
from cognimamba.evaluation.timing import markdown_table
from cognimamba.interop.hf_names import from_hf_state_dict, hf_model_config
from cognimamba.model.build import build_model
from cognimamba.model.tokenizer import load_tokenizer
from cognimamba.runs.loading import LoadedRun, load_run
from cognimamba.runs.tensors import load_state_into

SIDES = ("hf", "cogni")
LOGIT_TOLERANCE = 1e-3  # fp32 HF against the same weights in our LanguageModel: ~1e-5 (compare_hf.py checks the same)


@dataclass
class Result:
    side: str
    seed: int
    steps: int
    tokens: int
    train_seconds: float
    val_bits_per_byte: float
    val_loss: float
    eval_tokens: int
    eval_context: int

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a `cogni prepare` text data dir with a val split")
    parser.add_argument("--seconds", type=float, default=600.0, help="training seconds per run, each side")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run per side each")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both sides")
    parser.add_argument("--profile", default="cpu", help="the cogni side's --profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="extra `cogni train --set` overrides for the cogni side (repeatable)")
    parser.add_argument("--only", choices=SIDES, help="run one side only (no ratio)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every run and the summary here")
    hf = parser.add_argument_group("the HF side (defaults: the issue-32 baseline, the cpu profile's optimizer)")
    hf.add_argument("--hf-layers", type=int, default=4)
    hf.add_argument("--hf-dim", type=int, default=256)
    hf.add_argument("--hf-heads", type=int, default=8)
    hf.add_argument("--hf-kv-heads", type=int, default=4)
    hf.add_argument("--hf-ffn", type=int, default=688, help="intermediate size")
    hf.add_argument("--hf-untied", action="store_true", help="an lm_head of its own (default: tied, as the profile)")
    hf.add_argument("--hf-batch", type=int, default=16, help="windows per step (micro-batch, no accumulation)")
    hf.add_argument("--hf-seq-len", type=int, default=256, help="window length, also the scoring context")
    hf.add_argument("--hf-lr", type=float, default=3e-3, help="peak learning rate")
    hf.add_argument("--hf-warmup-steps", type=int, default=100)
    hf.add_argument("--hf-min-lr-ratio", type=float, default=0.1, help="the cosine's floor, a fraction of the peak")
    hf.add_argument("--hf-weight-decay", type=float, default=0.1)
    hf.add_argument("--hf-betas", type=float, nargs=2, default=(0.9, 0.95))
    hf.add_argument("--hf-grad-clip", type=float, default=1.0, help="0: no clipping")
    args = parser.parse_args(argv)
    args.seed_list = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    if not args.seed_list or args.seconds <= 0:
        parser.error("--seeds needs at least one seed and --seconds a positive number")
    return args


def hf_shape(args: argparse.Namespace, vocab_size: int) -> ModelConfig:
    """The HF model's shape as our config, so one description builds the LlamaForCausalLM and reads it back."""
    return ModelConfig(vocab_size=vocab_size, dim=args.hf_dim, n_layers=args.hf_layers, n_heads=args.hf_heads,
                       n_kv_heads=args.hf_kv_heads, ffn_dim=args.hf_ffn, max_seq_len=args.hf_seq_len,
                       tie_embeddings=not args.hf_untied, dropout=0.0)


def plain_llama(shape: ModelConfig) -> nn.Module:
    import transformers  # optional (.[bench]), so --help answers without it

    config = transformers.LlamaConfig(**hf_model_config(shape))
    config._attn_implementation = "sdpa"
    return transformers.LlamaForCausalLM(config)


def learning_rate(step: int, progress: float, args: argparse.Namespace) -> float:
    """Linear warmup over the first steps, cosine from the peak to its floor as the clock runs out."""
    warmup = min(1.0, (step + 1) / args.hf_warmup_steps) if args.hf_warmup_steps > 0 else 1.0
    floor = args.hf_lr * args.hf_min_lr_ratio
    return warmup * (floor + (args.hf_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def train_hf(args: argparse.Namespace, data: DataDir, seed: int) -> tuple[nn.Module, int, int, float]:
    """The plain loop, for --seconds of training: the model, steps, tokens and seconds it took."""
    torch.manual_seed(seed)
    model = plain_llama(hf_shape(args, data.vocab_size)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.hf_lr, betas=tuple(args.hf_betas),
                                  weight_decay=args.hf_weight_decay)
    windows = TokenWindows(data, "train", seed=seed)
    steps = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < args.seconds:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(steps, elapsed / args.seconds, args)
        inputs, targets = windows.random_batch(steps, 0, args.hf_batch, args.hf_seq_len)
        logits = model(input_ids=inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        loss.backward()
        if args.hf_grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.hf_grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
    return model, steps, steps * args.hf_batch * args.hf_seq_len, time.perf_counter() - started


def as_our_run(hf: nn.Module, shape: ModelConfig, data: DataDir) -> LoadedRun:
    """The trained HF weights in our LanguageModel, checked to give HF's logits, as a LoadedRun to score."""
    model = build_model(shape)
    load_state_into(model, from_hf_state_dict(hf.state_dict(), shape), Path("LlamaForCausalLM"))
    model.eval()
    hf.eval()
    inputs, _ = next(TokenWindows(data, "val").full_pass(2, shape.max_seq_len))
    with torch.no_grad():
        difference = float((model(inputs) - hf(input_ids=inputs, use_cache=False).logits).abs().max())
    if not difference < LOGIT_TOLERANCE:
        sys.exit(f"the HF model read into our LanguageModel differs by {difference:.2e} in its logits; not scoring it")
    return LoadedRun(Path("LlamaForCausalLM"), Config(model=shape), load_tokenizer(data.path / "tokenizer.json"),
                     model, {})


def score(side: str, seed: int, loaded: LoadedRun, data: DataDir, steps: int, tokens: int,
          seconds: float) -> Result:
    result, bits = eval_on_data(loaded, data)
    return Result(side, seed, steps, tokens, seconds, float("nan") if bits is None else bits, result.loss,
                  result.tokens, loaded.config.model.max_seq_len)


def run_hf(args: argparse.Namespace, data: DataDir, seed: int) -> Result:
    model, steps, tokens, seconds = train_hf(args, data, seed)
    return score("hf", seed, as_our_run(model, hf_shape(args, data.vocab_size), data), data, steps, tokens, seconds)


def run_cogni(args: argparse.Namespace, data: DataDir, seed: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="quality-vs-hf-", ignore_cleanup_errors=True) as scratch_name:
        scratch = Path(scratch_name)
        run = scratch / "run"
        settings = [f"train.seed={seed}", *args.overrides]
        command = [sys.executable, "-m", "cognimamba", "train", "--profile", args.profile, "--data", str(data.path),
                   "--max-time", f"{args.seconds:g}s", "--out", str(run), "--quiet",
                   *[arg for item in settings for arg in ("--set", item)]]
        threads = str(args.threads)
        env = {**os.environ, "COGNI_HOME": str(scratch / "home"), "OMP_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}
        finished = subprocess.run(command, env=env, capture_output=True, text=True)
        if finished.returncode != 0:
            sys.exit(f"cogni train failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
        state = json.loads((run / "trainer_state.json").read_text())
        return score("cogni", seed, load_run(run), data, int(state["step"]), int(state["tokens_seen"]),
                     float(state["elapsed"]))


def summary(results: list[Result]) -> dict[str, dict[str, float]]:
    """Per side: the median bits/byte and tokens/s over seeds, and the seeds' spread (max - min)."""
    sides: dict[str, dict[str, float]] = {}
    for side in SIDES:
        bits = [result.val_bits_per_byte for result in results if result.side == side]
        if bits:
            speeds = [result.tokens_per_second for result in results if result.side == side]
            sides[side] = {"median_bits_per_byte": statistics.median(bits), "spread": max(bits) - min(bits),
                           "median_tokens_per_second": statistics.median(speeds), "seeds": len(bits)}
    return sides


def report(results: list[Result], sides: dict[str, dict[str, float]]) -> str:
    rows = [[result.side, str(result.seed), f"{result.steps:,}", f"{result.tokens:,}",
             f"{result.tokens_per_second:,.0f}", f"{result.val_bits_per_byte:.4f}"] for result in results]
    rows += [[side, "median", "", "", f"{figures['median_tokens_per_second']:,.0f}",
              f"{figures['median_bits_per_byte']:.4f} (spread {figures['spread']:.4f})"]
             for side, figures in sides.items()]
    text = markdown_table(["side", "seed", "steps", "tokens", "tokens/s", "val bits/byte"], rows, numeric={2, 3, 4, 5})
    if len(sides) == 2:
        ratio = sides["cogni"]["median_bits_per_byte"] / sides["hf"]["median_bits_per_byte"]
        text += f"\n\nratio cogni / hf (median bits/byte): {ratio:.3f}"
    return text


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = DataDir.open(args.data)
    if not data.has_split("val"):
        sys.exit(f"{args.data}: no val split; prepare it with --val FILE")
    torch.set_num_threads(args.threads)
    order = [args.only] if args.only else list(SIDES)
    runners = {"hf": run_hf, "cogni": run_cogni}
    results: list[Result] = []
    for index, seed in enumerate(args.seed_list):
        for side in order if index % 2 == 0 else order[::-1]:
            print(f"{side} seed {seed}: training {args.seconds:g} s ...", file=sys.stderr, flush=True)
            results.append(runners[side](args, data, seed))
            latest = results[-1]
            print(f"{side} seed {seed}: {latest.steps} steps, {latest.val_bits_per_byte:.4f} bits/byte",
                  file=sys.stderr, flush=True)
    sides = summary(results)
    contexts = {result.eval_context for result in results}
    print(f"data {args.data}, {args.seconds:g} s a run, {args.threads} threads; val bits/byte over "
          f"{results[0].eval_tokens:,} tokens in windows of {'/'.join(map(str, sorted(contexts)))}\n")
    print(report(results, sides))
    if args.json:
        payload = {"data": str(args.data), "seconds": args.seconds, "threads": args.threads, "profile": args.profile,
                   "overrides": args.overrides, "hf": {key: value for key, value in vars(args).items()
                                                         if key.startswith("hf_")},
                   "runs": [{**asdict(result), "tokens_per_second": result.tokens_per_second} for result in results],
                   "sides": sides}
        if len(sides) == 2:
            payload["ratio"] = sides["cogni"]["median_bits_per_byte"] / sides["hf"]["median_bits_per_byte"]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
