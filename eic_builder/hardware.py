"""What the machine can do, and the precision and compilation chosen from it.

A "fast path" tuned on one CPU can be the slow path on another: bfloat16 is several
times faster than float32 where the CPU has native bf16 instructions (AVX512-BF16, AMX)
and several times slower where it is emulated (AVX2, plain AVX-512). So ``--dtype auto``
chooses by capability:

* CUDA: bfloat16 where ``torch.cuda.is_bf16_supported()`` (Ampere and later), else float32;
* CPU: bfloat16 only where ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16``; where the
  flags cannot be read (not Linux), a short probe times a bf16 and a float32 matmul and takes
  bf16 only when it is clearly faster; otherwise float32 (channels_last, oneDNN).

``torch.compile`` is never chosen for the user: it needs a C++ toolchain on the CPU, and its
minutes of compilation are won back only on long GPU runs; ``--compile`` asks for it.

The probes here (:func:`matmul_rate`, :func:`sequential_read_rate`) also give the benchmarks the
machine's own limits, against which they report the fraction reached.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from functools import cache
from pathlib import Path

import torch

from eic_builder.choices import DTYPES
from eic_builder.errors import check_choice

log = logging.getLogger(__name__)

# /proc/cpuinfo flags of CPUs that execute bfloat16 dot products natively
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# bf16 must beat float32 by this factor in the probe: a tie is not worth the precision
PROBE_MARGIN = 1.2


def _cpuinfo_value(keys: tuple[str, ...]) -> str | None:
    """The value of the first ``/proc/cpuinfo`` line starting with one of ``keys``; None without that file."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(keys):
                    return line.split(":", 1)[1]
    except OSError:
        pass
    return None


@cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo``; None where that file is absent (not Linux)."""
    value = _cpuinfo_value(("flags", "Features"))
    return None if value is None else frozenset(value.split())


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    value = _cpuinfo_value(("model name",))
    return value.strip() if value else platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def native_bf16_cpu(flags: frozenset[str] | None = None) -> bool | None:
    """Whether the CPU has native bfloat16 instructions; None when its flags are unknown."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    # oneDNN capped below its bf16 ISAs (ONEDNN_MAX_CPU_ISA=AVX2, say) emulates bf16 whatever the CPU has
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if cap != "ALL" and "BF16" not in cap and "AMX" not in cap:
        return False
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def machine_line() -> str:
    """One line that tells two machines' figures apart: CPU model, cores, torch's capability, bf16."""
    native = native_bf16_cpu()
    bf16 = {True: "native", False: "emulated", None: "unknown"}[native]
    text = (f"CPU: {cpu_model()}, {usable_cores()} cores, torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, bf16 {bf16}")
    if torch.cuda.is_available():
        text += f"; GPU: {torch.cuda.get_device_name(0)}"
    return text


def matmul_rate(dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 0.5,
                device: torch.device | str = "cpu") -> float:
    """GFLOP/s of repeated (n x n) @ (n x n) products in ``dtype`` on ``device`` (2 n^3 FLOP each),
    after one warm-up product; the best of the timed repetitions counts."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best, spent = float("inf"), 0.0
    while spent < seconds:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - started
        best, spent = min(best, dt), spent + dt
    return 2 * n**3 / best / 1e9


def sequential_read_rate(paths: list[Path], block: int = 1 << 22) -> float:
    """MB/s of reading ``paths`` start to end in ``block``-byte reads (what the page cache or the disk
    gives a plain sequential reader: the ceiling of an I/O-bound stage)."""
    total, t = 0, time.perf_counter()
    buf = bytearray(block)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total / max(time.perf_counter() - t, 1e-9) / 1e6


@cache
def _bf16_probe_faster() -> bool:
    return matmul_rate(torch.bfloat16, 512, 0.2) > PROBE_MARGIN * matmul_rate(torch.float32, 512, 0.2)


def resolve_dtype(requested: str, device: torch.device) -> str:
    """The dtype a run uses: ``requested`` unless it is ``auto`` (see the module doc)."""
    check_choice("--dtype", requested, DTYPES)
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    native = native_bf16_cpu()
    if native is None:
        native = _bf16_probe_faster()
    return "bfloat16" if native else "float32"


def bf16_autocast(requested: str, device: torch.device) -> bool:
    """Whether a run on ``device`` computes in bfloat16 autocast (``--dtype requested``, read by
    :func:`resolve_dtype`); logs the choice."""
    dtype = resolve_dtype(requested, device)
    log.info("computing in %s on %s (--dtype %s)", dtype, device, requested)
    return dtype == "bfloat16"
