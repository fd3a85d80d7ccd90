"""cognimamba next to Hugging Face transformers: the identical Llama, same weights, same process, interleaved.

    pip install -e '.[bench]'                       # transformers, the only extra this needs
    HF_HUB_OFFLINE=1 python benchmarks/compare_hf.py [--profile cpu | --run RUN] [-r 5] [--json]

Both models are built from one config and one set of weights (`cognimamba.interop.hf_names` splits our fused
projections into LlamaForCausalLM's), and their logits and greedy tokens are checked equal before anything
is timed. Each repetition then times both sides of every test back to back, alternating which goes first
(A B, B A, ...), so a neighbour's burst on a shared machine hits both alike (cognimamba/evaluation/timing.py,
which `cogni bench` times with too). Ratios are cognimamba / HF of the median tokens/sec.

- train:   one optimizer step at the config's micro-batch and sequence length: forward, cross-entropy,
           backward, gradient clipping and the same fused AdamW, on a second copy of each model. With
           --compile ours runs through torch.compile (`train.compile`), compiled before timing.
- prefill: one prompt of --prefill-tokens at batch 1, returning the last position's logits and keeping the
           keys and values, as generation's first step does (our DecodeCache; HF's own DynamicCache).
- decode:  --decode-tokens greedy tokens after a --prompt-tokens prompt at batch 1, the whole call timed:
           our Decoder.stream_ids against HF `generate(do_sample=False)` with its cache. With --compile our
           decoding steps run through torch.compile (`cogni chat --compile`); the compile happens before timing
           and its seconds are reported.

Dropout is off on both sides: HF's Llama has no residual dropout, and the comparison is of the same arithmetic.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the cogni CLI sets both (system/openmp.py), before torch
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import torch
from torch import nn

from cognimamba.config.profiles import get_profile
from cognimamba.config.schema import Config, GenerationConfig
from cognimamba.evaluation.timing import Side, interleaved, markdown_table, seconds_per_call, spread
from cognimamba.inference.decoding import Decoder
from cognimamba.interop.hf_names import hf_llama_config, to_hf_state_dict
from cognimamba.model.transformer import DecodeCache, LanguageModel, num_parameters
from cognimamba.runs.loading import load_run
from cognimamba.runs.tensors import model_state
from cognimamba.system.hardware import pick_device
from cognimamba.train.optim import build_optimizer
from cognimamba.train.step import training_step

TESTS = ("train", "prefill", "decode")


class HFLogits(nn.Module):
    """LlamaForCausalLM called the way our model is: token ids in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=idx, use_cache=False).logits


def hf_model(config: Config, state: dict[str, torch.Tensor], device: torch.device) -> nn.Module:
    import transformers

    hf_config = transformers.LlamaConfig(**hf_llama_config(config.model))
    hf_config._attn_implementation = "sdpa"  # transformers' default; named so the comparison says what it ran
    model = transformers.LlamaForCausalLM(hf_config)
    model.load_state_dict(to_hf_state_dict(state, config.model), strict=False)
    model.tie_weights()
    return model.to(device)


def our_model(config: Config, state: dict[str, torch.Tensor], device: torch.device) -> LanguageModel:
    model = LanguageModel(config.model)
    model.load_state_dict(state, strict=False)
    return model.to(device)


def source(args: argparse.Namespace) -> tuple[Config, dict[str, torch.Tensor], str]:
    """The config and weights both sides get: a run dir's, or a seeded random model of a profile."""
    if args.run is not None:
        loaded = load_run(args.run)
        config, state, described = loaded.config, model_state(loaded.model), str(args.run)
    else:
        config = get_profile(args.profile)
        torch.manual_seed(args.seed)
        state, described = model_state(LanguageModel(config.model)), f"{config.profile} profile, random weights"
    return replace(config, model=replace(config.model, dropout=0.0)), state, described


def check_identical(ours: LanguageModel, hf: nn.Module, config: Config, device: torch.device, prompt: list[int],
                    new_tokens: int) -> tuple[float, bool]:
    """Max logit difference on a batch, and whether both greedy continuations agree token for token."""
    generator = torch.Generator().manual_seed(1)
    idx = torch.randint(0, config.model.vocab_size, (2, min(64, config.model.max_seq_len)), generator=generator)
    with torch.inference_mode():
        diff = (ours(idx.to(device)) - hf(input_ids=idx.to(device)).logits).abs().max().item()
    return diff, ours_decode(ours, device, prompt, new_tokens)() == hf_decode(hf, device, prompt, new_tokens)()


def ours_decode(model: LanguageModel, device: torch.device, prompt: list[int],
                new_tokens: int, decoder: Decoder | None = None) -> Callable[[], list[int]]:
    decoder = decoder or Decoder(model, None, device)
    settings = GenerationConfig(temperature=0.0, max_new_tokens=new_tokens)
    return lambda: list(decoder.stream_ids(prompt, settings))


def hf_decode(model: nn.Module, device: torch.device, prompt: list[int], new_tokens: int) -> Callable[[], list[int]]:
    ids = torch.tensor([prompt], device=device)
    mask = torch.ones_like(ids)

    @torch.inference_mode()
    def run() -> list[int]:
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        return out[0, len(prompt):].tolist()

    return run


def build_sides(config: Config, state: dict[str, torch.Tensor], device: torch.device,
                args: argparse.Namespace) -> tuple[Side, Side, dict[str, object]]:
    vocab = config.model.vocab_size
    generator = torch.Generator().manual_seed(args.seed)
    batch, seq_len = config.train.micro_batch_size, config.model.max_seq_len
    tokens = torch.randint(0, vocab, (batch, seq_len + 1), generator=generator).to(device)
    batch_of_one_step = [(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())]
    prefill_ids = torch.randint(0, vocab, (1, args.prefill_tokens), generator=generator).to(device)
    prompt = torch.randint(0, vocab, (args.prompt_tokens,), generator=generator).tolist()

    ours, hf = our_model(config, state, device).eval(), hf_model(config, state, device).eval()
    max_diff, same_tokens = check_identical(ours, hf, config, device, prompt, args.decode_tokens)
    decoder = Decoder(ours, None, device, compile=args.compile)
    decoder.warm_up()
    if decoder.step.compile_error:
        sys.exit(f"--compile: torch.compile failed ({decoder.step.compile_error})")
    if args.compile and ours_decode(ours, device, prompt, args.decode_tokens, decoder)() != \
            hf_decode(hf, device, prompt, args.decode_tokens)():
        sys.exit("--compile: the compiled decoding gave other greedy tokens than transformers")

    # Training runs on second copies, so the models that decode keep the weights that were checked equal.
    ours_train, hf_train = our_model(config, state, device).train(), HFLogits(hf_model(config, state, device)).train()
    ours_train.gradient_checkpointing = config.train.grad_checkpointing
    compile_train = config.train.compile or args.compile
    ours_forward = torch.compile(ours_train) if compile_train else ours_train
    ours_optimizer = build_optimizer(ours_train, config.train, device)
    hf_optimizer = build_optimizer(hf_train, config.train, device)
    clip = config.train.grad_clip
    plain = contextlib.nullcontext()
    train_compile_seconds = None
    if compile_train:  # compile before timing, and say how long it took
        train_compile_seconds = seconds_per_call(
            lambda: training_step(ours_forward, ours_optimizer, batch_of_one_step, plain, clip), device)
    cache = DecodeCache(config.model, 1, args.prefill_tokens, device)

    @torch.inference_mode()
    def ours_prefill() -> None:
        ours(prefill_ids, cache=cache, start=0, last_only=True)

    @torch.inference_mode()
    def hf_prefill() -> None:
        hf(input_ids=prefill_ids, use_cache=True, logits_to_keep=1)

    ours_side = Side("cognimamba", {
        "train": lambda: training_step(ours_forward, ours_optimizer, batch_of_one_step, plain, clip),
        "prefill": ours_prefill, "decode": ours_decode(ours, device, prompt, args.decode_tokens, decoder)})
    hf_side = Side("transformers", {
        "train": lambda: training_step(hf_train, hf_optimizer, batch_of_one_step, plain, clip),
        "prefill": hf_prefill, "decode": hf_decode(hf, device, prompt, args.decode_tokens)})
    checks = {"max_logit_diff": max_diff, "same_greedy_tokens": same_tokens, "compiled_decode": args.compile,
              "compile_seconds": decoder.step.compile_seconds, "compiled_train": compile_train,
              "train_compile_seconds": train_compile_seconds}
    return ours_side, hf_side, checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="profile whose model and micro-batch to use (default cpu)")
    parser.add_argument("--run", type=Path, help="a run dir instead of random weights of --profile")
    parser.add_argument("-r", "--repetitions", type=int, default=5, help="timed repetitions after one warm-up")
    parser.add_argument("--prefill-tokens", type=int, help="prefill length (default: the model's max_seq_len)")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length before decoding")
    parser.add_argument("--decode-tokens", type=int, default=128, help="greedy tokens decoded per call")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto; fp32 either way")
    parser.add_argument("--compile", action="store_true", help="our decoding and training steps through "
                        "torch.compile, as `cogni chat --compile` and `train.compile` run them (compiled before "
                        "timing; the seconds are reported)")
    parser.add_argument("-t", "--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="shortest timed sample (short tests repeat)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tests", default=",".join(TESTS), help="comma-separated subset of train,prefill,decode")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    tests = [test for test in TESTS if test in args.tests.split(",")]
    if not tests or set(args.tests.split(",")) - set(TESTS):
        parser.error(f"--tests {args.tests!r}: choose from {', '.join(TESTS)}")
    try:
        import transformers
    except ImportError:
        sys.exit("compare_hf.py needs transformers: pip install -e '.[bench]'")

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    device = pick_device(args.device)
    config, state, described = source(args)
    args.prefill_tokens = args.prefill_tokens or config.model.max_seq_len
    context = config.model.max_seq_len
    if args.prompt_tokens + args.decode_tokens > context or args.prefill_tokens > context:
        parser.error(f"--prompt-tokens + --decode-tokens and --prefill-tokens must fit max_seq_len {context}")
    torch.manual_seed(args.seed)
    ours, hf, checks = build_sides(config, state, device, args)
    tokens_per_call = {"train": config.train.micro_batch_size * config.model.max_seq_len,
                       "prefill": args.prefill_tokens, "decode": args.decode_tokens}

    def progress(text: str) -> None:
        if not args.json:
            print(f"  {text}", file=sys.stderr, flush=True)

    interleaved([(ours, hf)], {test: tokens_per_call[test] for test in tests}, args.repetitions, args.min_seconds,
                device, progress)
    median = {side.name: {test: side.median(test) for test in tests} for side in (ours, hf)}
    ratios = {f"{test}_ratio": median["cognimamba"][test] / median["transformers"][test] for test in tests}
    result = {
        **ratios,
        "cognimamba": {f"{test}_tokens_per_s": value for test, value in median["cognimamba"].items()},
        "transformers": {f"{test}_tokens_per_s": value for test, value in median["transformers"].items()},
        "samples": {side.name: {test: side.samples[test] for test in tests} for side in (ours, hf)},
        **checks,
        "model": described, "parameters": num_parameters(our_model(config, state, torch.device("cpu")))[0],
        "train_batch": config.train.micro_batch_size, "seq_len": config.model.max_seq_len,
        "prefill_tokens": args.prefill_tokens, "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens, "device": device.type, "dtype": "fp32",
        "threads": torch.get_num_threads(), "repetitions": args.repetitions,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


def print_table(result: dict) -> None:
    print(f"\n{result['model']}: {result['parameters'] / 1e6:.2f}M parameters, {result['device']} fp32, "
          f"{result['threads']} threads, torch {result['versions']['torch']}, "
          f"transformers {result['versions']['transformers']}")
    print(f"identical model: max logit difference {result['max_logit_diff']:.2e}, greedy tokens "
          f"{'equal' if result['same_greedy_tokens'] else 'DIFFER'}; dropout off on both sides")
    if result["compiled_decode"]:
        print(f"cognimamba decode through torch.compile: compiled in {result['compile_seconds']:.1f} s before timing")
    if result["compiled_train"]:
        print(f"cognimamba training step through torch.compile: first step (compiling) took "
              f"{result['train_compile_seconds']:.1f} s before timing")
    print()
    shapes = {"train": f"batch {result['train_batch']} x {result['seq_len']}, fused AdamW"
                       + (" (ours compiled)" if result["compiled_train"] else ""),
              "prefill": f"{result['prefill_tokens']} tokens, batch 1",
              "decode": f"{result['decode_tokens']} greedy tokens after {result['prompt_tokens']}, batch 1"
                        + (" (ours compiled)" if result["compiled_decode"] else "")}
    rows = []
    for test in result["samples"]["cognimamba"]:
        ours = result["samples"]["cognimamba"][test]
        theirs = result["samples"]["transformers"][test]
        rows.append([test, shapes[test], f"{statistics.median(ours):,.0f} (±{spread(ours):,.0f})",
                     f"{statistics.median(theirs):,.0f} (±{spread(theirs):,.0f})", f"{result[f'{test}_ratio']:.2f}x"])
    print(markdown_table(["test", "shape", "cognimamba tokens/s", "transformers tokens/s", "ratio"], rows,
                         numeric=(2, 3, 4)))
    print(f"\nmedian of {result['repetitions']} interleaved repetitions (± standard deviation)")


if __name__ == "__main__":
    sys.exit(main())
