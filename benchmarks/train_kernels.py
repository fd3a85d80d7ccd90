"""A CPU training step's kernels: fp32 products on MKL against oneDNN, and the blocks' dropout against F.dropout.

    python benchmarks/train_kernels.py [--profile cpu] [--rows 4096] [--threads 2] [-r 10]

For each distinct product of the profile's model (its Linear layers' weights), forward and backward of --rows rows
through F.linear (MKL) and through model/linear's oneDNN function; then dropout forward and backward on the
residual stream's [micro-batch, context, dim] through F.dropout (its mask drawn by bernoulli_) and through
model/dropout (drawn by torch.rand); then the profile's whole training step in fp32 (forward, backward, AdamW)
with the products this host's rule picks. The ways take turns; medians in ms. model/linear's rule for which
library a product takes (use_onednn) and model/dropout came from these figures (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from cognimamba.config.profiles import get_profile
from cognimamba.evaluation.timing import markdown_table, seconds_per_call
from cognimamba.model.build import build_model
from cognimamba.model.dropout import dropout
from cognimamba.model.linear import AVAILABLE, OneDNNLinear, use_onednn


def turns(ways: dict[str, object], repetitions: int) -> dict[str, float]:
    """Median ms of each way, the ways taking turns after one warm-up call each."""
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for run in ways.values():
        run()  # type: ignore[operator]
    for _ in range(repetitions):
        for name, run in ways.items():
            samples[name].append(seconds_per_call(run) * 1e3)  # type: ignore[arg-type]
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--rows", type=int, default=4096, help="rows of each product (micro-batch x context)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-r", "--repetitions", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = get_profile(args.profile)
    torch.manual_seed(0)
    model = build_model(config.model).train()
    shapes = sorted({tuple(module.weight.shape) for module in model.modules() if isinstance(module, torch.nn.Linear)})
    rows = []
    for out_features, in_features in shapes:
        x = torch.randn(args.rows, in_features, requires_grad=True)
        weight = torch.randn(out_features, in_features, requires_grad=True)
        grad = torch.randn(args.rows, out_features)
        ways = {"MKL": lambda x=x, w=weight, g=grad: F.linear(x, w).backward(g)}
        if AVAILABLE:
            ways["oneDNN"] = lambda x=x, w=weight, g=grad: OneDNNLinear.apply(x, w).backward(g)
        times = turns(ways, args.repetitions)
        taken = "oneDNN" if use_onednn(x, weight) else "MKL"
        rows.append([f"{args.rows} x {in_features} -> {out_features}", f"{times['MKL']:.1f}",
                     f"{times['oneDNN']:.1f}" if "oneDNN" in times else "-", taken])
    print(markdown_table(["product, forward and backward", "MKL ms", "oneDNN ms", "Linear takes"], rows, {1, 2}))

    p = config.model.dropout or 0.3
    stream = torch.randn(config.train.micro_batch_size, config.model.max_seq_len, config.model.dim,
                         requires_grad=True)
    grad = torch.randn_like(stream)
    times = turns({"F.dropout": lambda: F.dropout(stream, p).backward(grad),
                   "model/dropout": lambda: dropout(stream, p).backward(grad)}, args.repetitions)
    print()
    print(markdown_table([f"dropout {p} on {list(stream.shape)}, forward and backward", "ms"],
                         [[name, f"{value:.1f}"] for name, value in times.items()], {1}))

    batch = torch.randint(0, config.model.vocab_size, (config.train.micro_batch_size, config.model.max_seq_len + 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)

    def step() -> None:
        logits = model(batch[:, :-1])
        F.cross_entropy(logits.view(-1, logits.size(-1)), batch[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = turns({"step": step}, args.repetitions)
    print(f"\nthe {args.profile} profile's training step (fp32, micro-batch {config.train.micro_batch_size} x "
          f"{config.model.max_seq_len}, {args.threads} threads): {times['step']:.0f} ms")


if __name__ == "__main__":
    main()
