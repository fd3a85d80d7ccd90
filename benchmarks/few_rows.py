"""A decoding step's products on CPU: a few rows times every weight of a shape, PyTorch's ways against ours.

    python benchmarks/few_rows.py [--profile 4gb] [--rows 1,2,4,8,16] [-r 30]

For each number of rows (one per stream in a batch of slots) it times the products of one decoding step of the
profile's shape (every layer's attention and MLP weights; the head is left out) in fp32 and in bf16, the ways
taking turns in one process (medians of -r turns):
- fp32: F.linear (MKL), x @ the [in, out] decoding copy (what one row takes), and model/cpu_matmul's kernel;
- int8 (per-row scales, as `--weights int8`): the dequantized product, PyTorch's `_weight_int8pack_mm` (native
  bf16 only), and the int8 kernel (rows rounded to int8 in blocks of 32 as llama.cpp's q8_0, byte products summed
  in integers; AVX2);
- bf16: F.linear (oneDNN), the kernel, and oneDNN's GEMM on weights packed for it once (`pack_bf16`), all three
  with native bf16 only; and bf16 weights times fp32 rows, as `--weights bf16` runs on a CPU without native bf16
  (the kernel's AVX2 form, each weight widened in registers).
It prints ms a step and GB/s of weights streamed; a step that streams its weights once costs about the same at 8
rows as at 1. Results go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cognimamba.config.profiles import get_profile
from cognimamba.model import cpu_matmul


def step_weights(profile: str) -> list[torch.Tensor]:
    """[out, in] weights of every layer's products at the profile's shape, random."""
    config = get_profile(profile).model
    q, kv = config.q_dim, config.kv_dim
    shapes = [(q, config.dim), (kv, config.dim), (kv, config.dim), (config.dim, q),
              (config.ffn_dim, config.dim), (config.ffn_dim, config.dim), (config.dim, config.ffn_dim)]
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=generator) * 0.02 for _ in range(config.n_layers) for shape in shapes]


def interleaved_ms(products: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median ms of each product, taking turns, so that the host's drift falls on all of them alike."""
    times: list[list[float]] = [[] for _ in products]
    for repeat in range(repeats + 3):
        for product, taken in zip(products, times, strict=True):
            start = time.perf_counter()
            product()
            if repeat >= 3:  # the first turns warm caches and thread pools
                taken.append(time.perf_counter() - start)
    return [statistics.median(taken) * 1000 for taken in times]


def every(product: Callable[[torch.Tensor, torch.Tensor], object], inputs: list[torch.Tensor],
          weights: list[torch.Tensor]) -> Callable[[], object]:
    """One decoding step's products: product(x, weight) over the layers."""
    return lambda: [product(x, weight) for x, weight in zip(inputs, weights, strict=True)]


def kernel(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return cpu_matmul.few_rows(weight, x)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The weight as `--weights int8` holds it: int8 [out, in], one fp32 scale a row, and that scale in bf16."""
    scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
    qweight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return qweight, scale, scale.bfloat16()


def dequantized(x: torch.Tensor, weight: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """What Int8Linear falls back to: the product with the weight widened to fp32, then the row scales."""
    return F.linear(x, weight[0].float()) * weight[1]


def int8pack(x: torch.Tensor, weight: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """PyTorch's int8 weight-only kernel, rows rounded to bf16 (what one row took before the kernel)."""
    return torch.ops.aten._weight_int8pack_mm(x.bfloat16(), weight[0], weight[2])


def int8_kernel(x: torch.Tensor, weight: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return cpu_matmul.few_rows_int8(weight[0], weight[1], x)


def bf16_weight_kernel(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return cpu_matmul.few_rows_bf16_weight(weight, x)


def onednn_packed(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    return cpu_matmul.packed_bf16(packed, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="4gb")
    parser.add_argument("--rows", default="1,2,4,8,16")
    parser.add_argument("-r", "--repeats", type=int, default=30)
    args = parser.parse_args()
    if not cpu_matmul.ready():
        raise SystemExit(f"the kernel does not run here: {cpu_matmul._state['error']}")
    wide, native_bf16 = cpu_matmul._state["avx512"], cpu_matmul._state["bf16"]
    weights = step_weights(args.profile)
    copies = [weight.t().contiguous() for weight in weights]
    bf16 = [weight.bfloat16() for weight in weights]
    packed = [cpu_matmul.pack_bf16(weight) for weight in bf16] if native_bf16 else []
    quantized = [int8_rows(weight) for weight in weights]
    fp32_mb = sum(weight.numel() for weight in weights) * 4 / 1e6
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__};"
          f" {args.profile} shape, {fp32_mb:.0f} MB of fp32 weights a step; AVX-512 {wide}, AVX512-BF16 {native_bf16}")
    names = ["fp32 F.linear", "fp32 decoding copy", "fp32 kernel", "int8 dequantized", "int8 bf16 rows",
             "int8 kernel", "bf16 F.linear", "bf16 kernel", "bf16 packed", "bf16 weights, fp32 rows"]
    print("| rows | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    with torch.no_grad():
        for rows in [int(value) for value in args.rows.split(",")]:
            inputs = [torch.randn(rows, weight.size(1)) for weight in weights]
            inputs16 = [x.bfloat16() for x in inputs]
            ways: list[tuple[Callable[[], object] | None, float]] = [
                (every(F.linear, inputs, weights), fp32_mb), (every(torch.matmul, inputs, copies), fp32_mb),
                (every(kernel, inputs, weights) if wide or all(w.size(1) % 8 == 0 for w in weights) else None, fp32_mb),
                (every(dequantized, inputs, quantized), fp32_mb / 4),
                (every(int8pack, inputs, quantized) if native_bf16 else None, fp32_mb / 4),
                (every(int8_kernel, inputs, quantized), fp32_mb / 4),
                (every(F.linear, inputs16, bf16) if native_bf16 else None, fp32_mb / 2),
                (every(kernel, inputs16, bf16) if native_bf16 else None, fp32_mb / 2),
                (every(onednn_packed, inputs16, packed) if packed else None, fp32_mb / 2),
                (every(bf16_weight_kernel, inputs, bf16), fp32_mb / 2)]
            timed = iter(interleaved_ms([product for product, _ in ways if product], args.repeats))
            cells = []
            for product, megabytes in ways:
                ms = next(timed) if product else None
                cells.append(f"{ms:.2f} ms ({megabytes / ms:.0f} GB/s)" if ms else "-")
            print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
