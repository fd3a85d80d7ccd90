"""Linear layers whose fp32 CPU matmuls run on oneDNN instead of MKL.

PyTorch sends fp32 CPU matmuls to MKL, which on AMD processors takes a generic code path well below the
speed of oneDNN, the other GEMM library inside every x86 PyTorch wheel. On Intel processors MKL runs its own
fast kernels and is as fast or faster, so the path is taken on AMD (and Hygon) processors only (figures in
benchmarks/README.md), where it pays (use_onednn: a small weight's few rows and, without AVX-512, training stay on
MKL); COGNI_ONEDNN=1 takes it on any vendor's CPU, COGNI_ONEDNN=0 nowhere. `Linear` is nn.Linear, with the same
weight and state-dict key, whose forward and backward take oneDNN when that pays: fp32 on CPU, at least MIN_ROWS
rows (one decoded token stays on MKL, whose per-call cost is lower), no autocast, and not while torch.compile
traces (it picks its own kernels). The products are fp32 products; only the order of summation differs (about
1e-7 relative).
"""

from __future__ import annotations

import os
import platform
import time

import torch
from torch import nn

from cognimamba.model import cpu_matmul
from cognimamba.system.hardware import mkl_takes_generic_path, synchronize

MIN_ROWS = 8  # below this oneDNN's fixed cost per call exceeds MKL's whole matmul (benchmarks/README.md)
MKL_PROMPT_ELEMENTS = 1 << 18  # without autograd a smaller weight stays on MKL (use_onednn)
SMALL_WEIGHT_ONEDNN_ROWS = 256  # ... below this many rows, where AVX-512 gives oneDNN its lead
AVAILABLE = (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
             and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def onednn_enabled(setting: str | None, available: bool, generic_mkl: bool) -> bool:
    """COGNI_ONEDNN=0 or 1 decides (1 only where the wheel has the kernel); unset, oneDNN where MKL is slow."""
    if setting == "0":
        return False
    return available and (setting == "1" or generic_mkl)


ENABLED = onednn_enabled(os.environ.get("COGNI_ONEDNN"), AVAILABLE, mkl_takes_generic_path())
DECODE_COPIES = os.environ.get("COGNI_DECODE_COPIES", "1") != "0"  # 0: no [in, out] copies (saves memory)


def matmul_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T on oneDNN; a may have leading batch dimensions, b is 2-D."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """y = x @ weight.T, with both backward matmuls on oneDNN too."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return matmul_nt(x, weight)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = matmul_nt(grad, weight.t().contiguous())  # the weight is small; a contiguous copy is faster
        if ctx.needs_input_grad[1]:
            rows_grad, rows_x = grad.reshape(-1, grad.size(-1)).t(), x.reshape(-1, x.size(-1)).t()
            # grad.T @ x, computed in the orientation oneDNN runs faster: the narrower matrix first.
            if weight.size(0) <= weight.size(1):
                grad_weight = matmul_nt(rows_grad, rows_x)
            else:
                grad_weight = matmul_nt(rows_x, rows_grad).t()
        return grad_x, grad_weight


def is_plain(weight: torch.Tensor) -> bool:
    """A plain tensor, not a subclass such as torchao's int8 weights, which bring their own matmul."""
    return type(weight) in (torch.Tensor, nn.Parameter)


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 on CPU, at least MIN_ROWS rows, no autocast, not while torch.compile traces, and where oneDNN beat MKL:
    - training: on AMD processors with AVX-512 only. Without it (cpu_matmul.AVX2_ONLY_AMD) MKL's AVX2 code is as
      wide as oneDNN's, and it trained faster (the `cpu` profile's products, forward and backward, 4096 rows on two
      Zen 3 cores: 10-30% less time; a whole step 1,144 against 1,223 ms).
    - without autograd (prompts, a batch of slots, evals): a weight of MKL_PROMPT_ELEMENTS or more (the 4gb
      shape's), which oneDNN multiplies as fast or faster at every row count; a smaller one (the `cpu` profile's,
      the chat quickstart's) only from SMALL_WEIGHT_ONEDNN_ROWS rows with AVX-512, since oneDNN's cost per call
      exceeds MKL's whole product there: 1.2-1.9x MKL's time at 8-32 rows of a 128- to 256-wide weight on a Zen 4,
      0.86-0.97x from 256 rows (benchmarks/RESULTS.md); without AVX-512, never (the chat quickstart's 128-wide
      products at 24-48 rows, one Zen 3 thread: 42-126 against 78-209 us on MKL)."""
    if not (AVAILABLE and ENABLED and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and is_plain(weight) and x.numel() >= MIN_ROWS * x.size(-1)
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        return False
    if torch.is_grad_enabled():
        return not cpu_matmul.AVX2_ONLY_AMD
    return weight.numel() >= MKL_PROMPT_ELEMENTS or (
        not cpu_matmul.AVX2_ONLY_AMD and x.numel() >= SMALL_WEIGHT_ONEDNN_ROWS * x.size(-1))


def use_transposed(x: torch.Tensor) -> bool:
    """One row (a decoded token) of fp32 with autograd off: the case the decoding copy serves. Two rows already
    run faster through F.linear than through the copy (about 5.6 against 10.7 ms for the 4gb shape's products)."""
    return x.dtype == torch.float32 and x.numel() == x.size(-1) and not torch.is_grad_enabled()


class Linear(nn.Linear):
    """nn.Linear that takes the oneDNN path where it pays; anything else (CUDA, half precision, bias) is F.linear.

    Decoding multiplies one row by the weight, which only streams the weight from memory. With the weight
    stored [out, in], each output is a dot product over a short row, which MKL streams slowly; with an
    [in, out] copy it accumulates along long contiguous rows, much faster where out > in (benchmarks/README.md,
    "Decoding copies of the wide weights"). So decoding on CPU
    keeps that copy, made on first use and remade whenever the weight changes; it costs memory equal to the
    wide layers' weights (about 60% of a Llama's), which COGNI_DECODE_COPIES=0 saves at the cost of speed.
    """

    _transposed: torch.Tensor | None = None
    _transposed_of: tuple[int, int] = (0, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            if cpu_matmul.applies(x, self.weight):  # a decoding step's rows (cpu_matmul.FP32_ROWS, BF16_ROWS)
                return cpu_matmul.few_rows(self.weight, x)
            if use_onednn(x, self.weight):
                return OneDNNLinear.apply(x, self.weight)
            if use_transposed(x) and self.keeps_decoding_copy:
                return x @ self.transposed_weight()
        return super().forward(x)

    @property
    def keeps_decoding_copy(self) -> bool:
        """fp32 on CPU, no bias, at least as wide out as in (narrower layers gained nothing), copies enabled, and
        the one row not the kernel's (model/cpu_matmul)."""
        weight = self.weight
        return (DECODE_COPIES and self.bias is None and weight.device.type == "cpu" and weight.dtype == torch.float32
                and is_plain(weight) and self.out_features >= self.in_features
                and not cpu_matmul.takes_one_fp32_row(weight))

    def transposed_weight(self) -> torch.Tensor:
        """The [in, out] copy of the weight; while torch.compile traces, the one refresh_transposed made."""
        if torch.compiler.is_compiling():
            return self._transposed if self._transposed is not None else self.weight.t()
        key = (self.weight.data_ptr(), self.weight._version)
        if self._transposed is None or self._transposed_of != key:
            self._transposed = self.weight.detach().t().contiguous()
            self._transposed_of = key
        return self._transposed


def refresh_transposed(model: nn.Module) -> None:
    """Bring every decoding copy up to date before torch.compile traces (tracing cannot check versions), and
    compile the CPU decoding kernel where the weights will use it (tracing cannot compile it)."""
    ready_kernel_for(model)  # first: where the kernel takes one fp32 row, no decoding copy is made
    for module in model.modules():
        if isinstance(module, Linear) and module.keeps_decoding_copy:
            module.transposed_weight()


def ready_kernel_for(model: nn.Module) -> None:
    """Build model/cpu_matmul's decoding kernel now if some weight of the model may take it: when a model is
    loaded or a decoder made, never in the middle of a request (the first build takes about half a minute)."""
    weights = [getattr(module, "qweight", None) for module in model.modules()]  # int8 layers' (inference/weights.py)
    weights += [module.weight for module in model.modules() if isinstance(module, nn.Linear)]
    if any(weight is not None and cpu_matmul.may_apply(weight) for weight in weights):
        cpu_matmul.ready()


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.5, windows: int = 5) -> float:
    """FLOP/s of a large square matmul on this device: the denominator of MFU.

    The time is split into short windows and the fastest one counts: on a shared machine a neighbour's
    burst slows some windows down, while the peak is what the hardware can do. On CPU the matmul is the
    one the model's layers use (oneDNN where `use_onednn` takes it, else MKL).
    """
    size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def matmul() -> None:
        if use_onednn(a, b):
            matmul_nt(a, b)
        else:
            torch.mm(a, b, out=out)

    for _ in range(2):
        matmul()
    synchronize(device)
    best = 0.0
    for _ in range(max(1, windows)):
        iterations = 0
        start = time.perf_counter()
        while True:
            matmul()
            iterations += 1
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / max(1, windows):
                break
        best = max(best, 2 * size**3 * iterations / elapsed)
    return best
