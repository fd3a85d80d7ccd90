"""What Muon's Newton-Schulz orthogonalisation costs per optimizer step, in fp32 and in bf16.

    python benchmarks/newton_schulz.py [--profile cpu] [-r 10]
    ONEDNN_MAX_CPU_ISA=AVX512_CORE python benchmarks/newton_schulz.py   # as on a CPU without native bf16

Times `train.muon.newton_schulz` (5 steps, torch.optim.Muon's coefficients) over every block of every hidden
matrix of the profile's model (q, k, v, proj, gate, up, down per layer), as one `train.optimizer = muon` step
does. ONEDNN_MAX_CPU_ISA=AVX512_CORE keeps oneDNN off AVX512-BF16 and AMX, which shows what bf16 costs on a
CPU that emulates it; `train.muon_precision = auto` picks fp32 there (train/optim.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cognimamba.config.profiles import get_profile
from cognimamba.system.hardware import cpu_has_native_bf16
from cognimamba.train.muon import newton_schulz


def hidden_blocks(profile: str) -> list[tuple[int, int]]:
    """(rows, columns) of each block Muon orthogonalises in one step of the profile's model."""
    model = get_profile(profile).model
    kv_dim = model.kv_dim
    per_layer = [(model.q_dim, model.dim), (kv_dim, model.dim), (kv_dim, model.dim), (model.dim, model.q_dim),
                 (model.ffn_dim, model.dim), (model.ffn_dim, model.dim), (model.dim, model.ffn_dim)]
    return per_layer * model.n_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("-r", "--repetitions", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    matrices = [torch.randn(shape) for shape in hidden_blocks(args.profile)]
    print(f"{args.profile}: {len(matrices)} blocks, {torch.get_num_threads()} threads, "
          f"native bf16 (AVX512-BF16/AMX): {cpu_has_native_bf16()}")
    for dtype in (torch.float32, torch.bfloat16):
        for matrix in matrices[:7]:  # warm-up: one layer
            newton_schulz(matrix, dtype)
        seconds = []
        for _ in range(args.repetitions):
            started = time.perf_counter()
            for matrix in matrices:
                newton_schulz(matrix, dtype)
            seconds.append(time.perf_counter() - started)
        print(f"{str(dtype).removeprefix('torch.'):9} median {1000 * statistics.median(seconds):8.1f} ms per step, "
              f"min {1000 * min(seconds):8.1f} ms")


if __name__ == "__main__":
    main()
