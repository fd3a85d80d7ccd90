"""What machine we run on: device choice, precision support, measured matmul peak, memory in use."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils._triton import has_triton

from cognimamba.errors import CogniError

T = TypeVar("T")


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


@functools.cache
def cpu_has_flag(*flags: str) -> bool:
    """Whether /proc/cpuinfo lists any of these CPU flags (e.g. "avx512_bf16"); other systems answer no."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return re.search(rf"\b({'|'.join(map(re.escape, flags))})\b", cpuinfo) is not None


def mkl_takes_generic_path() -> bool:
    """Whether this is a processor on which MKL skips its fast kernels: AMD's (and Hygon's, which are AMD's)."""
    try:
        with Path("/proc/cpuinfo").open(errors="replace") as cpuinfo:  # Linux: vendor_id is near the top
            vendor = cpuinfo.read(4096)
    except OSError:
        vendor = platform.processor()  # Windows: "AMD64 Family 25 Model 1 Stepping 1, AuthenticAMD"
    return "AuthenticAMD" in vendor or "HygonGenuine" in vendor


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX).

    There, bf16 matmuls and bf16 autocast training beat fp32 (benchmarks/README.md); without it bf16 is
    emulated and far slower than fp32.
    """
    return cpu_has_flag("avx512_bf16", "amx_bf16")


def pick_dtype(precision: str, device: torch.device, setting: str = "precision") -> torch.dtype:
    """The autocast dtype: bf16 where the GPU supports it, fp16 otherwise; on CPU fp32 unless bf16 is asked.

    `auto` stays fp32 on CPU (reproducible everywhere); an explicit bf16 runs bf16 on a CPU with native
    bf16 and is a clear error on one without, naming `setting`. fp16 on CPU has no fast kernels and runs
    as fp32.
    """
    if precision == "fp32":
        return torch.float32
    if device.type == "cpu":
        if precision != "bf16":
            return torch.float32
        if not cpu_has_native_bf16():
            raise CogniError(f"{setting} bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 runs "
                             "slower than fp32; use fp32")
        return torch.bfloat16
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on this device (None when it can): what it generates needs a compiler.

    Inductor writes Triton kernels for CUDA and C++ for the CPU. Without them the compile fails at the first
    step, so training checks first and runs eagerly instead (GPU profiles compile by default).
    """
    if device.type == "cuda":

        return None if has_triton() else "torch.compile needs Triton for CUDA (pip install triton, or triton-windows)"
    if device.type == "cpu":

        if any(shutil.which(name) for name in ("g++", "c++", "clang++", "cl")):
            return None
        return "torch.compile needs a C++ compiler for the CPU (g++, clang++ or MSVC's cl)"
    return f"torch.compile is not set up for {device.type} here"


def compiled_if_possible(module: torch.nn.Module, device: torch.device,
                         wanted: bool) -> tuple[torch.nn.Module, str | None]:
    """`module` through torch.compile when `wanted` and possible here; otherwise `module` itself, with why
    it was not compiled when it was wanted."""
    problem = compile_unavailable(device) if wanted else None
    return (torch.compile(module), None) if wanted and problem is None else (module, problem)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new high-water mark, so peak_memory_bytes describes what runs next (Linux only on CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()  # cached blocks of earlier work would otherwise hide this work's reservations
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets the process's peak resident set size (VmHWM)
    except OSError:
        pass


def cuda_memory_held(device: torch.device) -> tuple[int, int]:
    """(allocated, reserved) bytes on a CUDA device now; (0, 0) elsewhere."""
    if device.type != "cuda":
        return 0, 0
    return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)


def cuda_peak_reserved(device: torch.device) -> int | None:
    """The most the CUDA caching allocator held since the last reset: what the card must really have free."""
    return torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None


def peak_memory_bytes(device: torch.device) -> int | None:
    """CUDA max allocated on GPU, peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource  # noqa: PLC0415 (POSIX only)

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except ImportError:  # Windows
        return None


def on_passing_thread(work: Callable[[], T]) -> T:
    """`work()` on a thread that ends with it; its result, or its exception raised here.

    libgomp keeps a pool of OpenMP workers for each thread that has run a parallel operation, for as long as
    that thread lives, and with more pooled workers than cores it stops them spinning between operations, so
    every operation then waits for a worker to wake. A model loaded on one thread and stepped on another (a
    server's engine) ran its steps 1.4-2x slower than on the loading thread (benchmarks/RESULTS.md). Work done
    before the stepping thread takes over (loading, compiling the steps, a tool_choice score) runs here and
    leaves no pool behind.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the caller, which raises it as its own
            outcome["error"] = error

    thread = threading.Thread(target=run, name="cogni-passing", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` CPU threads (None: as they are), then restore the previous count."""
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def cpu_threads() -> int:
    return torch.get_num_threads()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} logical cores, {torch.get_num_threads()} threads)"
