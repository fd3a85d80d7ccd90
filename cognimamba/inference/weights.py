"""The weight formats a loaded model can decode in: fp32 as trained, bf16, or int8 (q8_0-like).

A decoded token multiplies one row by every weight, so its time is the weights streamed from memory: half
the bytes (bf16) or a quarter (int8) is the way past the fp32 floor (benchmarks/README.md, "Against
llama.cpp"). Weights change after loading, for inference only; training and export read the run's fp32.

- bf16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), and on GPUs: every floating weight in
  bf16, the KV cache too (it follows the parameters). One or two rows of a decoding step take model/cpu_matmul's
  AVX512-BF16 kernel where the CPU has it (else one row `torch.mv`, which PyTorch runs faster than F.linear's
  bf16 GEMM); three and more (a batch of slots, a prompt) oneDNN's GEMM on a copy of each weight packed for it.
- bf16 on a CPU without native bf16 (AMD Zen 1-3, most Intel laptops), where PyTorch emulates bf16 arithmetic,
  slower than fp32: weight-only, as llama.cpp runs f16 there. The linear layers' weights are stored in bf16 and
  everything else stays fp32 (activations, norms, the embedding table, the KV cache). A decoding step's rows
  (1 to 16) take model/cpu_matmul's AVX2 kernel, which widens each bf16 weight to fp32 in registers (a shift)
  and sums in fp32, so half of fp32's bytes are streamed; a prompt multiplies by the weight widened to fp32.
  Without AVX2 it is refused with one line.
- int8: the linear layers' weights quantized per output channel (symmetric, one fp32 scale per row, -127 to
  127) by torchao's `quantize_` with `Int8WeightOnlyConfig`; norms and the embedding table stay fp32. Each
  product's input rows are rounded to int8 in blocks of 32 with a scale each, as llama.cpp's q8_0 products do
  (cpu_matmul.q8_rounded): torchao's own eager int8 linear dequantizes the whole weight on every call (it relies
  on torch.compile to fuse that), slower than fp32, so a decoding step's rows (1 to 16: one stream or a batch of
  slots) take model/cpu_matmul's int8 kernel on a CPU with AVX2, which sums each block's byte products in
  integers; on AMD processors, where MKL runs its generic path, prompts take it too (it beat the dequantized
  GEMM there, cpu_matmul.INT8_MAX_ROWS). Everything else (prompts elsewhere, GPUs) multiplies the rows rounded
  the same way by the dequantized weight, so a sequence's numbers do not depend on how many rows a pass held.
  Without the kernel, one row on a CPU with native bf16 takes PyTorch's `aten._weight_int8pack_mm` (activations
  rounded to bf16 for it, not to q8_0's steps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cognimamba.config.schema import WEIGHT_FORMATS
from cognimamba.errors import CogniError
from cognimamba.model import cpu_matmul
from cognimamba.model.linear import ready_kernel_for
from cognimamba.system.hardware import cpu_has_flag, cpu_has_native_bf16

SINGLE_ROW_MAX = 1  # rows of activations that count as "one decoded token" for the matrix-vector kernels
INT8_EXTRA_HINT = "pip install 'cognimamba[cpu-int8]'"


def check_weight_format(weights: str, device: torch.device, setting: str = "--weights") -> None:
    """One clear line for a format this machine cannot run well (or at all)."""
    if weights not in WEIGHT_FORMATS:
        raise CogniError(f"{setting} {weights!r}: choose one of {', '.join(WEIGHT_FORMATS)}")
    if weights == "bf16" and device.type == "cpu" and not cpu_has_native_bf16() and not cpu_has_flag("avx2"):
        raise CogniError(f"{setting} bf16: this CPU has neither native bf16 (AVX512-BF16 or AMX) nor AVX2 for bf16 "
                         "weights with fp32 arithmetic; use int8 or fp32")
    if weights == "bf16" and device.type not in ("cpu", "cuda"):
        raise CogniError(f"{setting} bf16: not supported on {device.type}; use fp32")
    if weights == "int8" and device.type not in ("cpu", "cuda"):
        raise CogniError(f"{setting} int8: not supported on {device.type}; use fp32")


def apply_weight_format(model: nn.Module, weights: str, setting: str = "--weights") -> nn.Module:
    """The model, in place, with its weights in `weights` format (fp32 leaves it as it is)."""
    device = next(model.parameters()).device
    check_weight_format(weights, device, setting)
    if weights == "bf16":
        if device.type == "cpu":
            cpu_matmul.ready()  # built now, while the model loads, not at the first token (once a machine: ~30 s)
        if device.type == "cpu" and not cpu_has_native_bf16():
            # A layer of its own per weight, so a weight tied to the embedding table leaves the table fp32.
            replace_linear_layers(model, lambda layer: Bf16WeightLinear(layer.weight.detach().to(torch.bfloat16)))
        else:
            model.to(torch.bfloat16)
            replace_linear_layers(model, Bf16Linear.like)
    elif weights == "int8":
        quantize_int8(model, setting)
    ready_kernel_for(model)  # the decoding kernel built while the model loads (int8; fp32 on some CPUs)
    model.eval()
    return model


def weight_format(model: nn.Module) -> str:
    """Which format `apply_weight_format` left the model in."""
    if any(isinstance(module, Int8Linear) for module in model.modules()):
        return "int8"
    if any(isinstance(module, Bf16WeightLinear) for module in model.modules()):
        return "bf16"
    return "bf16" if next(model.parameters()).dtype == torch.bfloat16 else "fp32"


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def replace_linear_layers(model: nn.Module, replacement: Callable[[nn.Linear], nn.Module]) -> None:
    """Every bias-free linear layer of the model, in place, by what `replacement` makes of it."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and module.bias is None:
            set_submodule(model, name, replacement(module))


def quantize_int8(model: nn.Module, setting: str = "--weights") -> None:
    """Every bias-free linear layer's weight to int8 with per-row scales, through torchao's quantize_."""
    Int8WeightOnlyConfig, quantize_ = torchao_quantization(setting)

    def quantized(layer: nn.Linear) -> Int8Linear:
        # A layer of its own, so a weight tied to the embedding table keeps the table fp32.
        alone = nn.Sequential(nn.Linear(layer.in_features, layer.out_features, bias=False, device=layer.weight.device))
        alone[0].weight = nn.Parameter(layer.weight.detach().float(), requires_grad=False)
        quantize_(alone, Int8WeightOnlyConfig())
        weight = alone[0].weight
        return Int8Linear(weight.qdata, weight.scale.reshape(-1).float())

    replace_linear_layers(model, quantized)


def torchao_quantization(setting: str = "--weights") -> tuple[Any, Any]:
    """torchao's Int8WeightOnlyConfig and quantize_, imported quietly, or one line saying how to get torchao."""
    # Imported here: torchao is optional (the cpu-int8 extra), and its import logs warnings about CUDA-only
    # extensions a CPU wheel cannot load, which say nothing to a user of --weights int8.
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_  # noqa: PLC0415 (optional: cognimamba[cpu-int8])
    except ImportError:
        raise CogniError(f"{setting} int8 needs torchao: {INT8_EXTRA_HINT}") from None
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    return Int8WeightOnlyConfig, quantize_


class Bf16Linear(nn.Linear):
    """nn.Linear in bf16 for decoding on CPU: one or two rows take the AVX512-BF16 kernel (or for one row torch.mv,
    faster than the bf16 GEMM), more rows (a batch of slots, a prompt) oneDNN's GEMM on a copy of the weight
    packed for it once (model/cpu_matmul: it streams the weight at memory speed, the plain GEMM does not)."""

    packed: torch.Tensor | None = None  # a plain attribute: no state-dict key, not moved by .to()

    @classmethod
    def like(cls, layer: nn.Linear) -> Bf16Linear:
        new = cls(layer.in_features, layer.out_features, bias=False, device="meta")
        new.weight = layer.weight
        if cpu_matmul.packs_bf16(layer.weight):
            new.packed = cpu_matmul.pack_bf16(layer.weight)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_matmul.applies(x, self.weight):  # AVX512-BF16: streams the weight faster than torch.mv
            return cpu_matmul.few_rows(self.weight, x)
        if self.packed is not None and x.dtype == torch.bfloat16 and not torch.is_grad_enabled():
            return cpu_matmul.packed_bf16(self.packed, x)
        if x.device.type == "cpu" and x.numel() == x.size(-1) and x.dtype == self.weight.dtype:
            return torch.mv(self.weight, x.reshape(-1)).view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight)


class Bf16WeightLinear(nn.Module):
    """y = x @ weight.T with a bf16 `weight` [out, in] and fp32 x and y: bf16 weights on a CPU without native bf16.
    A decoding step's rows take the AVX2 kernel (the weight widened in registers); more rows, or no kernel, multiply
    by the weight widened to fp32 first, which costs a copy per call but keeps a prompt's GEMM at fp32 speed."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("weight", weight.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_matmul.applies_bf16_weight(x, self.weight):
            return cpu_matmul.few_rows_bf16_weight(self.weight, x)
        return F.linear(x, self.weight.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 weights, fp32 arithmetic"


class Int8Linear(nn.Module):
    """y = x @ (qweight * scale).T with int8 `qweight` [out, in] and fp32 `scale` [out]."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        # torchao rounds a row's most negative weight to -128 (its range is -128 to 127, the scale amax / 127.5);
        # -127 instead, one step (under 1% of that weight) for symmetric int8 that the kernel's byte products
        # (cpu_matmul, VPMADDUBSW) take without overflow, as llama.cpp's q8_0 holds it.
        self.register_buffer("qweight", qweight.clamp(min=-127).contiguous())
        self.register_buffer("scale", scale.contiguous())
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16))
        self.single_row_kernel = qweight.device.type == "cpu" and cpu_has_native_bf16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_matmul.applies_int8(x, self.qweight):  # AVX2 or AVX-512: a few rows straight off the int8 weights
            return cpu_matmul.few_rows_int8(self.qweight, self.scale, x)
        rows = x.numel() // x.size(-1)
        if self.single_row_kernel and rows <= SINGLE_ROW_MAX and not torch.is_grad_enabled():
            product = torch.ops.aten._weight_int8pack_mm(x.reshape(rows, -1).to(torch.bfloat16), self.qweight,
                                                         self.scale_bf16)
            return product.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return F.linear(cpu_matmul.q8_rounded(x), self.qweight.to(x.dtype)) * self.scale.to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        """The fp32 weight this layer stands for."""
        return self.qweight.float() * self.scale[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-row scales"
