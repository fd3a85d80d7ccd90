"""Decode speed by sequence mixer: tokens/s of single-token steps at a given context, per layer pattern.

`cogni bench`'s tg decodes from an empty cache, so it averages over contexts 0..n; this asks what one step
costs once `context` tokens are already in the cache, where attention reads every cached key and a Mamba-2
layer only its fixed state. Each pattern gets random weights of the profile's shape (speed does not depend on
them), a prefill of `context` tokens, then `--steps` greedy steps through DecodeStep, the step chat and bench
use (one thread for a small model on CPU). Every repetition alternates the patterns, so load from other
programs hits them alike; the median is reported.

    python benchmarks/mixer_decode.py                         # cpu profile: '' (attention), MMMMMM, MMAMMA
    python benchmarks/mixer_decode.py --contexts 256,2048 --steps 64 -r 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch

from cognimamba.config.profiles import get_profile
from cognimamba.inference.decode_step import DecodeStep
from cognimamba.model.transformer import DecodeCache, LanguageModel, num_parameters


def build(profile: str, pattern: str, context: int, steps: int) -> LanguageModel:
    config = replace(get_profile(profile).model, layer_pattern=pattern, max_seq_len=context + steps + 1)
    torch.manual_seed(0)
    return LanguageModel(config).eval()


@torch.inference_mode()
def decode_seconds(model: LanguageModel, context: int, steps: int) -> float:
    """Seconds for `steps` greedy single-token steps after a prefill of `context` tokens."""
    cache = DecodeCache(model.config, 1)
    prompt = torch.randint(0, model.config.vocab_size, (1, context), generator=torch.Generator().manual_seed(0))
    logits = model(prompt, cache=cache, start=0, last_only=True)[:, -1]
    step = DecodeStep(model, torch.device("cpu"))
    token = torch.argmax(logits, dim=-1, keepdim=True)
    started = time.perf_counter()
    for position in range(context, context + steps):
        torch.argmax(step(token, cache, position), dim=-1, keepdim=True, out=token)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--patterns", default=",MMMMMM,MMAMMA", help="comma-separated; empty = all attention")
    parser.add_argument("--contexts", default="256,2048")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("-r", "--repetitions", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    patterns = args.patterns.split(",")
    contexts = [int(part) for part in args.contexts.split(",")]
    rows = []
    for context in contexts:
        models = {pattern: build(args.profile, pattern, context, args.steps) for pattern in patterns}
        samples: dict[str, list[float]] = {pattern: [] for pattern in patterns}
        for repetition in range(args.repetitions + 1):  # the first is the warm-up
            order = patterns if repetition % 2 == 0 else patterns[::-1]
            for pattern in order:
                seconds = decode_seconds(models[pattern], context, args.steps)
                if repetition:
                    samples[pattern].append(args.steps / seconds)
        for pattern in patterns:
            rows.append({"pattern": pattern or "(attention)", "context": context,
                         "parameters": num_parameters(models[pattern])[0],
                         "median_tokens_per_second": statistics.median(samples[pattern]),
                         "samples": samples[pattern]})
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'pattern':<12} {'context':>7} {'parameters':>11} {'tokens/s':>9}  samples")
    for row in rows:
        spread = ", ".join(f"{sample:.0f}" for sample in row["samples"])
        print(f"{row['pattern']:<12} {row['context']:>7} {row['parameters']:>11,} "
              f"{row['median_tokens_per_second']:>9.0f}  {spread}")


if __name__ == "__main__":
    main()
