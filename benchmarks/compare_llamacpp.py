"""cognimamba next to llama.cpp on the same weights: decode and prefill at three precisions, interleaved.

    pip install -e '.[llamacpp,cpu-int8,export]'     # llama-cpp-python, torchao, gguf
    python benchmarks/compare_llamacpp.py [--profile cpu | --profile 4gb --vocab 2048 | --run RUN] [-r 5] [--json]

One model (a run dir's, or a seeded random model of a profile with a BPE tokenizer trained on TinyStories, from
../shared/data where present, else on `cogni quickstart`'s procedural stories, whose ~800 tokens make the head
smaller than the profile's) is exported with `cogni export`'s own GGUF writer three times, f32, f16 and q8_0, and
loaded into llama.cpp (llama-cpp-python); our side holds the same weights as fp32, bf16 and int8 (`--weights`,
inference/weights.py).
The pairs compared are fp32 / f32, bf16 / f16 (the half precision each runs fastest on CPU) and int8 / q8_0.
Before timing, the fp32 and f32 greedy tokens are checked equal, and the int8 and q8_0 ones compared: both
round the weights (per row against per block of 32), so they agree until a near-tie goes the other way.

- decode:  --decode-tokens greedy tokens after a --prompt-tokens prompt, batch 1, the whole call timed: our
           `Decoder.stream_ids` against llama-cpp-python's `Llama.generate` (top_k=1), both sampling on the host;
           with --compile our decoding step runs through torch.compile, as `cogni serve` runs it by default.
- prefill: one prompt of --prefill-tokens (one llama.cpp batch), filling a fresh KV cache, last logits kept.

Each repetition times every pair back to back, alternating which side goes first, so a neighbour's burst on
a shared machine hits both alike (cognimamba/evaluation/timing.py). Ratios are cognimamba / llama.cpp of the
median tokens/s. Both sides get the same CPU threads (-t, default torch's) for prefill; for decode we take our
own thread rule (inference/decode_step.decode_threads) unless -t is given, and llama.cpp takes -t. --profile-step
prints where one decode step's time goes (torch.profiler) for each of our formats; --bits-per-byte DATA_DIR (with
--run) reports each format's validation bits/byte.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the cogni CLI sets both (system/openmp.py), before torch
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import torch
from tokenizers import Tokenizer

from cognimamba.config.profiles import get_profile
from cognimamba.config.schema import GenerationConfig, ModelConfig
from cognimamba.data.synthetic.stories import generate_stories
from cognimamba.errors import CogniError
from cognimamba.evaluation.timing import Side, interleaved, markdown_table
from cognimamba.inference.decode_step import decode_threads
from cognimamba.inference.decoding import Decoder
from cognimamba.inference.weights import apply_weight_format
from cognimamba.interop.gguf_file import write_gguf
from cognimamba.model.tokenizer import train_tokenizer
from cognimamba.model.transformer import DecodeCache, LanguageModel, num_parameters
from cognimamba.runs.loading import load_run
from cognimamba.runs.tensors import model_state

try:
    import llama_cpp
except ImportError:
    llama_cpp = None

TESTS = ("decode", "prefill")
# (our --weights, llama.cpp's GGUF type, the pair's name in the ratios)
PAIRS = (("fp32", "f32", "f32"), ("bf16", "f16", "half"), ("int8", "q8_0", "int8"))
TOKENIZER_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinystories_train.txt"


def source(args: argparse.Namespace) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer, str]:
    """The config, weights and tokenizer both sides get."""
    if args.run is not None:
        loaded = load_run(args.run)
        return loaded.config.model, model_state(loaded.model), loaded.tokenizer, str(args.run)
    config = get_profile(args.profile).model
    if TOKENIZER_TEXT.is_file():
        text = TOKENIZER_TEXT.read_text(encoding="utf-8").split("\n\n")
    else:  # a fresh clone: the procedural stories; the model's vocab is what a tokenizer learns from them
        text = list(generate_stories(20_000))
    tokenizer = train_tokenizer(text, args.vocab or config.vocab_size)
    config = replace(config, vocab_size=tokenizer.get_vocab_size(), dropout=0.0)
    torch.manual_seed(args.seed)
    state = model_state(LanguageModel(config))
    shape = f"{args.profile} profile" + (f" shape, vocab {config.vocab_size}" if args.vocab else "")
    return config, state, tokenizer, f"{shape}, random weights"


def our_models(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, LanguageModel]:
    """fp32, and bf16 and int8 where this machine can hold them (a one-line note where not)."""
    base = LanguageModel(config)
    base.load_state_dict(state, strict=False)
    models = {"fp32": base.eval()}
    for weights in ("bf16", "int8"):
        try:
            models[weights] = apply_weight_format(copy.deepcopy(base), weights)
        except CogniError as error:
            print(f"  skipping our {weights}: {error}", file=sys.stderr)
    return models


@contextlib.contextmanager
def without_extra_buffers(enabled: bool = True) -> Iterator[None]:
    """Load llama.cpp models with `use_extra_bufts` off: no runtime repacking, no AMX buffers.

    On a KVM guest whose CPU reports AMX, llama.cpp's AMX q8_0 kernel dies of SIGILL (tilezero) there, and
    llama-cpp-python's Llama has no argument for it, so its default model parameters are patched meanwhile.
    """
    low_level = llama_cpp.llama_cpp
    default = low_level.llama_model_default_params

    def params():  # -> llama_model_params
        value = default()
        value.use_extra_bufts = False
        return value

    if enabled:
        low_level.llama_model_default_params = params
    try:
        yield
    finally:
        low_level.llama_model_default_params = default


def llama_models(config: ModelConfig, state: dict[str, torch.Tensor], tokenizer: Tokenizer, folder: Path,
                 threads: int, batch: int, extra_buffers: bool) -> dict[str, object]:
    """llama.cpp's Llama on our GGUF export in each type (an f32 KV cache, as ours)."""
    models = {}
    for gguf_type in ("f32", "f16", "q8_0"):
        path = folder / f"model-{gguf_type}.gguf"
        write_gguf(path, path.stem, config, state, tokenizer, gguf_type)
        with without_extra_buffers(not extra_buffers):
            models[gguf_type] = llama_cpp.Llama(str(path), n_ctx=config.max_seq_len, n_batch=batch, n_ubatch=batch,
                                                n_threads=threads, n_threads_batch=threads, type_k=0, type_v=0,
                                                flash_attn=False, verbose=False, seed=0)
    return models


def ours_decode(model: LanguageModel, prompt: list[int], new_tokens: int,
                threads: int | None, compile: bool = False) -> Callable[[], list[int]]:
    decoder = Decoder(model, None, torch.device("cpu"), compile=compile, threads=threads)
    decoder.warm_up()  # a compiled step compiles here, before any timing
    settings = GenerationConfig(temperature=0.0, max_new_tokens=new_tokens)
    return lambda: list(decoder.stream_ids(prompt, settings))


def llama_decode(llm: object, prompt: list[int], new_tokens: int) -> Callable[[], list[int]]:
    def run() -> list[int]:
        tokens = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            tokens.append(token)
            if len(tokens) == new_tokens:
                return tokens
        return tokens

    return run


def ours_prefill(model: LanguageModel, ids: list[int]) -> Callable[[], object]:
    tokens = torch.tensor([ids])
    cache = DecodeCache(model.config, 1, len(ids), torch.device("cpu"), next(model.parameters()).dtype)

    @torch.inference_mode()
    def run() -> object:
        return model(tokens, cache=cache, start=0, last_only=True)

    return run


def llama_prefill(llm: object, ids: list[int]) -> Callable[[], object]:
    def run() -> object:
        llm.reset()
        llm.eval(ids)

    return run


def agreement(ours: list[int], theirs: list[int]) -> dict[str, int]:
    """How long two greedy continuations agree from the start, and at how many positions overall."""
    first_difference = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), len(ours))
    return {"agree_from_start": first_difference, "agree_positions": sum(a == b for a, b in zip(ours, theirs,
                                                                                              strict=False)),
            "tokens": len(ours)}


def profile_step(model: LanguageModel, threads: int | None, rows: int = 12) -> str:
    """torch.profiler's table of 16 decode steps (after 8 warm-up steps), by self CPU time."""
    from torch.profiler import profile

    decoder = Decoder(model, None, torch.device("cpu"), threads=threads)
    cache = DecodeCache(model.config, 1, 32, torch.device("cpu"), next(model.parameters()).dtype)
    token = torch.zeros((1, 1), dtype=torch.long)
    with torch.inference_mode():
        for position in range(8):
            decoder.step(token, cache, position)
        with profile() as profiler:
            for position in range(8, 24):
                decoder.step(token, cache, position)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def bits_per_byte(run: Path, data_dir: Path, decode_windows: int) -> dict[str, dict[str, float]]:
    """Validation bits/byte per weight format: the whole split in full windows (the prefill path), and the first
    `decode_windows` windows token by token through the KV cache (the path a reply is decoded on)."""
    from cognimamba.data.data_dir import DataDir
    from cognimamba.data.loader import TokenWindows
    from cognimamba.model.loss import evaluate_loss

    data = DataDir.open(data_dir)
    split = "val" if data.has_split("val") else "train"
    bytes_per_token = data.bytes_per_token(split)
    results = {}
    for weights in ("fp32", "bf16", "int8"):
        loaded = load_run(run)
        try:
            model = apply_weight_format(loaded.model, weights)
        except CogniError as error:
            print(f"  skipping {weights}: {error}", file=sys.stderr)
            continue
        seq_len = loaded.config.model.max_seq_len
        windows = TokenWindows(data, split)
        full = evaluate_loss(model, windows.full_pass(8, seq_len))
        batches = list(windows.full_pass(1, seq_len))[:decode_windows]
        stepped = evaluate_loss(StepByStep(model), batches)
        results[weights] = {"full_pass": full.bits_per_byte(bytes_per_token),
                            "decoded": stepped.bits_per_byte(bytes_per_token)}
    return results


class StepByStep(torch.nn.Module):
    """A model called on a window that runs it one token at a time through the KV cache, as decoding does."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        cache = DecodeCache(self.model.config, idx.size(0), idx.size(1), idx.device, dtype)
        return torch.cat([self.model(idx[:, [i]], cache=cache, start=i) for i in range(idx.size(1))], dim=1).float()


def build(args: argparse.Namespace, folder: Path) -> tuple[list[tuple[Side, Side]], dict[str, object]]:
    """Both sides of each pair, GGUF files written to `folder`; greedy tokens compared before any timing."""
    config, state, tokenizer, described = source(args)
    needed = max(args.prefill_tokens, args.prompt_tokens + args.decode_tokens)
    config = replace(config, max_seq_len=max(config.max_seq_len, needed), dropout=0.0)
    threads = args.threads or torch.get_num_threads()
    ours = our_models(config, state)
    theirs = llama_models(config, state, tokenizer, folder, threads, args.prefill_tokens, args.llama_extra_buffers)
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, config.vocab_size, (args.prompt_tokens,), generator=generator).tolist()
    prefill_ids = torch.randint(0, config.vocab_size, (args.prefill_tokens,), generator=generator).tolist()

    pairs, checks = [], {"model": described, "parameters": num_parameters(ours["fp32"])[0],
                         "vocab_size": config.vocab_size}
    for weights, gguf_type, label in PAIRS:
        if weights not in ours:
            continue
        our_side = Side(f"cognimamba {weights}", {
            "decode": ours_decode(ours[weights], prompt, args.decode_tokens, args.threads, args.compile),
            "prefill": ours_prefill(ours[weights], prefill_ids)})
        their_side = Side(f"llama.cpp {gguf_type}", {
            "decode": llama_decode(theirs[gguf_type], prompt, args.decode_tokens),
            "prefill": llama_prefill(theirs[gguf_type], prefill_ids)})
        checks[f"greedy_{label}"] = agreement(our_side.runners["decode"](), their_side.runners["decode"]())
        checks[f"decode_threads_{weights}"] = args.threads or decode_threads(ours[weights], torch.device("cpu"))
        pairs.append((our_side, their_side))
    if args.profile_step:
        for weights, model in ours.items():
            print(f"\none decode step, cognimamba {weights} (16 steps):\n{profile_step(model, args.threads)}",
                  file=sys.stderr)
    return pairs, checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="profile whose model shape to use (default cpu)")
    parser.add_argument("--vocab", type=int, help="vocab size of the random model (default: the profile's)")
    parser.add_argument("--run", type=Path, help="a run dir instead of random weights of --profile")
    parser.add_argument("-r", "--repetitions", type=int, default=5, help="timed repetitions after one warm-up")
    parser.add_argument("--prefill-tokens", type=int, default=512, help="prefill length (pp)")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt length before decoding")
    parser.add_argument("--decode-tokens", type=int, default=128, help="greedy tokens decoded per call (tg)")
    parser.add_argument("-t", "--threads", type=int, help="CPU threads for both sides (default: torch's; our "
                        "decode: its own rule)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="shortest timed sample (short tests repeat)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-step", action="store_true", help="print a torch.profiler table of our decode "
                        "steps per format")
    parser.add_argument("--bits-per-byte", type=Path, metavar="DATA_DIR", help="with --run: validation bits/byte "
                        "of each of our weight formats on this data dir, then exit")
    parser.add_argument("--decode-windows", type=int, default=4, help="windows --bits-per-byte decodes token by "
                        "token")
    parser.add_argument("--llama-extra-buffers", action="store_true", help="let llama.cpp repack weights and use "
                        "AMX (off by default: its AMX kernel dies of SIGILL on some VMs)")
    parser.add_argument("--compile", action="store_true", help="our decoding step through torch.compile, as "
                        "`cogni serve` runs it by default (compiled before timing)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bits_per_byte is not None:
        if args.run is None:
            parser.error("--bits-per-byte needs --run")
        print(json.dumps(bits_per_byte(args.run, args.bits_per_byte, args.decode_windows)))
        return 0
    if llama_cpp is None:
        print("compare_llamacpp.py: skipped, llama-cpp-python is not installed (pip install -e '.[llamacpp]')",
              file=sys.stderr)
        return 0

    def progress(text: str) -> None:
        if not args.json:
            print(f"  {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="compare_llamacpp-") as folder:
        pairs, checks = build(args, Path(folder))
        tokens = {"decode": args.decode_tokens, "prefill": args.prefill_tokens}
        interleaved(pairs, tokens, args.repetitions, args.min_seconds, progress=progress)
        result = summary(pairs, checks, args)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


def summary(pairs: list[tuple[Side, Side]], checks: dict[str, object], args: argparse.Namespace) -> dict:
    median = {side.name: {test: side.median(test) for test in TESTS} for pair in pairs for side in pair}
    ratios: dict[str, float] = {}
    for ours, theirs in pairs:
        label = next(label for weights, _, label in PAIRS if ours.name.endswith(weights))
        ratios[f"decode_ratio_{label}"] = median[ours.name]["decode"] / median[theirs.name]["decode"]
        suffix = "" if label == "f32" else f"_{label}"
        ratios[f"prefill_ratio{suffix}"] = median[ours.name]["prefill"] / median[theirs.name]["prefill"]
    return {**ratios, "tokens_per_s": median,
            "samples": {side.name: side.samples for pair in pairs for side in pair}, **checks,
            "prefill_tokens": args.prefill_tokens, "prompt_tokens": args.prompt_tokens,
            "decode_tokens": args.decode_tokens, "threads": torch.get_num_threads(), "repetitions": args.repetitions,
            "llama_extra_buffers": args.llama_extra_buffers, "compiled": args.compile,
            "versions": {"torch": torch.__version__, "llama_cpp_python": llama_cpp.__version__}}


def print_table(result: dict) -> None:
    print(f"\n{result['model']}: {result['parameters'] / 1e6:.2f}M parameters, {result['threads']} threads, torch "
          f"{result['versions']['torch']}, llama-cpp-python {result['versions']['llama_cpp_python']}")
    for key, value in result.items():
        if key.startswith("greedy_"):
            print(f"greedy tokens, {key.removeprefix('greedy_')}: agree for the first {value['agree_from_start']} "
                  f"of {value['tokens']} ({value['agree_positions']} positions equal)")
    names = list(result["tokens_per_s"])
    rows = []
    for test in TESTS:
        for ours, theirs in zip(names[::2], names[1::2], strict=True):
            mine, other = result["tokens_per_s"][ours][test], result["tokens_per_s"][theirs][test]
            rows.append([test, ours.split()[-1], f"{mine:,.0f}", theirs.split()[-1], f"{other:,.0f}",
                         f"{mine / other:.2f}x"])
    print()
    print(markdown_table(["test", "cognimamba", "tokens/s", "llama.cpp", "tokens/s", "ratio"], rows,
                         numeric=(2, 4, 5)))
    compiled = ", our decoding step through torch.compile" if result["compiled"] else ""
    print(f"\nmedian of {result['repetitions']} interleaved repetitions{compiled}; decode = "
          f"{result['decode_tokens']} greedy tokens after {result['prompt_tokens']}, prefill = "
          f"{result['prefill_tokens']} tokens, batch 1")


if __name__ == "__main__":
    sys.exit(main())
