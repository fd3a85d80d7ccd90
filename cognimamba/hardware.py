"""What machine we run on: device choice, precision support, measured matmul peak, memory in use."""

from __future__ import annotations

import os
import sys
import time

import torch

from cognimamba.errors import CogniError


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise CogniError(f"device {requested!r} is not a device name; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CogniError(f"device {requested!r} asked for, but no CUDA GPU is available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CogniError(f"device {requested!r} asked for, but MPS is not available; use --device cpu")
    return device


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: bf16 where the GPU supports it, fp16 otherwise, fp32 on CPU (no fast half math)."""
    if precision == "fp32" or device.type == "cpu":
        return torch.float32
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """FLOP/s of a large square matmul on this device: the denominator of MFU."""
    size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    iterations = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            a @ b
        iterations += 4
        synchronize(device)
    elapsed = time.perf_counter() - start
    return 2 * size**3 * iterations / elapsed


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """CUDA max allocated on GPU, peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except ImportError:  # Windows
        return None


def cpu_threads() -> int:
    return torch.get_num_threads()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} logical cores, {torch.get_num_threads()} threads)"
