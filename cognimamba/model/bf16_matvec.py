"""One row times a bf16 weight on CPUs with AVX512-BF16: the product a decoded token makes, at memory speed.

A decoding step multiplies one row by every weight, so its time is the time to stream the weights. PyTorch's CPU
kernels for a bf16 matrix times one row (oneDNN's through F.linear, `torch.mv`) stream about 8-12 GB/s on two
cores, less than fp32 products stream from the same memory, so bf16 weights decoded barely faster than fp32
ones (benchmarks/RESULTS.md, issue 29). No maintained library in a PyTorch wheel has one that does better
(tried: oneDNN prepacked, `torch.mv`, Inductor's C++ GEMM templates and reductions). This one is a dozen lines
of AVX512-BF16 (VDPBF16PS: 32 bf16 products a cycle summed in fp32), eight weight rows at a time against one
shared row of the input, split across torch's threads.

It is compiled on first use with torch's own C++ extension builder (a C++ compiler and ninja; about half a minute,
cached after). Where that fails, or the CPU lacks AVX512-BF16, `available()` says no and the caller keeps
its PyTorch product (torch.mv, F.linear). Registered as a torch.library op, so torch.compile traces through it.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import torch

from cognimamba.system.hardware import cpu_has_flag

log = logging.getLogger("cognimamba.model")

ROWS_PER_BLOCK = 8  # weight rows a block reads at once against one load of the input
SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

constexpr int64_t R = ROWS_PER_BLOCK;

// out[n] = sum_k w[n, k] * x[k] for n in [begin, end): w bf16 [N, K] row-major, K a multiple of 32; fp32 sums.
__attribute__((target("avx512f,avx512bf16")))
static void rows(const uint16_t* w, const uint16_t* x, float* out, int64_t K, int64_t begin, int64_t end) {
  int64_t n = begin;
  for (; n + R <= end; n += R) {
    __m512 sums[R];
    for (int64_t r = 0; r < R; ++r) sums[r] = _mm512_setzero_ps();
    const uint16_t* block = w + n * K;
    for (int64_t k = 0; k < K; k += 32) {
      __m512bh xs = (__m512bh)_mm512_loadu_si512(x + k);
      for (int64_t r = 0; r < R; ++r) {
        _mm_prefetch((const char*)(block + (r + R) * K + k), _MM_HINT_T0);  // the next block, same columns
        sums[r] = _mm512_dpbf16_ps(sums[r], (__m512bh)_mm512_loadu_si512(block + r * K + k), xs);
      }
    }
    for (int64_t r = 0; r < R; ++r) out[n + r] = _mm512_reduce_add_ps(sums[r]);
  }
  for (; n < end; ++n) {
    __m512 sum = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32)
      sum = _mm512_dpbf16_ps(sum, (__m512bh)_mm512_loadu_si512(w + n * K + k), (__m512bh)_mm512_loadu_si512(x + k));
    out[n] = _mm512_reduce_add_ps(sum);
  }
}

torch::Tensor matvec(torch::Tensor weight, torch::Tensor x) {
  TORCH_CHECK(weight.scalar_type() == at::kBFloat16 && x.scalar_type() == at::kBFloat16, "bf16 only");
  TORCH_CHECK(weight.is_contiguous() && weight.size(1) % 32 == 0 && x.numel() == weight.size(1), "shapes");
  auto row = x.contiguous();
  int64_t N = weight.size(0), K = weight.size(1), blocks = N / R;
  auto out = torch::empty({N}, weight.options().dtype(at::kFloat));
  auto w = reinterpret_cast<const uint16_t*>(weight.data_ptr<at::BFloat16>());
  auto xs = reinterpret_cast<const uint16_t*>(row.data_ptr<at::BFloat16>());
  float* o = out.data_ptr<float>();
  at::parallel_for(0, blocks, 8, [&](int64_t b, int64_t e) { rows(w, xs, o, K, b * R, e == blocks ? N : e * R); });
  return out.to(at::kBFloat16);
}
""".replace("ROWS_PER_BLOCK", str(ROWS_PER_BLOCK))

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "kernel": the compiled module, or "error": why there is none


def build_name() -> str:
    """The extension's name, torch's version in it: torch keeps builds by name, and one built against another
    version's headers must not be loaded."""
    return "cognimamba_bf16_matvec_" + re.sub(r"\W", "_", torch.__version__)


def available() -> bool:
    """Whether the kernel runs here; compiles it the first time (not while torch.compile traces: see ready)."""
    if _state:
        return "kernel" in _state
    return not torch.compiler.is_compiling() and ready()


def ready() -> bool:
    """Compile the kernel now if this CPU can run it (DecodeStep calls this before tracing); whether it runs."""
    with _lock:
        if not _state:
            _state.update(_build())
    return "kernel" in _state


def _build() -> dict[str, Any]:
    """{"kernel": the compiled module}, or {"error": why there is none}."""
    if not cpu_has_flag("avx512_bf16"):  # Intel Cooper Lake and Sapphire Rapids on, AMD Zen 4 on
        return {"error": "no AVX512-BF16 on this CPU"}
    try:
        from torch.utils.cpp_extension import load_inline  # noqa: PLC0415 (imports setuptools: only here)

        return {"kernel": load_inline(build_name(), cpp_sources=SOURCE, functions=["matvec"],
                                      extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"])}
    except Exception as error:  # no compiler, no ninja, an old one: PyTorch's products serve instead
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
        log.warning("bf16 decoding kernel unavailable (%s); bf16 products stay on PyTorch's", message)
        return {"error": message}


def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """One bf16 row on CPU without autograd, a plain contiguous bf16 weight whose rows are whole 32s."""
    return (x.dtype == torch.bfloat16 and weight.dtype == torch.bfloat16 and x.device.type == "cpu"
            and x.numel() == x.size(-1) == weight.size(1) and weight.size(1) % 32 == 0 and weight.is_contiguous()
            and type(weight) in (torch.Tensor, torch.nn.Parameter) and not torch.is_grad_enabled() and available())


@torch.library.custom_op("cognimamba::bf16_matvec", mutates_args=())
def bf16_matvec(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x [..., in] (one row) @ weight.T, weight [out, in] bf16: [..., out] in bf16, summed in fp32."""
    return _state["kernel"].matvec(weight, x).view(*x.shape[:-1], weight.size(0))


@bf16_matvec.register_fake
def _(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.size(0)))
