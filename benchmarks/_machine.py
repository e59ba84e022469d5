"""What the machine is, what its fp32 matmul peak is, and how much memory / GC time a process used."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import sys
import time


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "accelerate", "trl", "rlhfkit"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # a missing peer is reported, not fatal
            versions[name] = None
    isa = "unknown"
    with contextlib.suppress(Exception):
        isa = torch.backends.cpu.get_cpu_capability()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": isa,
        "memory_gb": mem_gb,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        **versions,
    }


def matmul_peak(size: int = 1024, seconds: float = 3.0) -> dict:
    """Best fp32 matmul throughput (GFLOP/s) over repeated (size × size) @ (size × size) products,
    with torch's default thread count: the denominator of model-FLOPs utilization."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    c = torch.empty(size, size)
    for _ in range(3):  # warm up
        torch.mm(a, b, out=c)
    flops = 2 * size**3
    best, n, t_end = 0.0, 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or n < 5:
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        dt = time.perf_counter() - t0
        best = max(best, flops / dt / 1e9)
        n += 1
    return {"gflops": best, "size": size, "repeats": n, "threads": torch.get_num_threads()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB).

    On Linux this is ``VmHWM`` of /proc/self/status: the high-water mark of this process's own
    memory. Not ``ru_maxrss``: Linux carries it across ``exec``, so a worker started by a parent
    that had grown to 500 MiB would report at least 500 MiB whatever it used itself (the
    benchmark's parent trains a reward model in-process, and Python's subprocess uses vfork)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class GcTimer:
    """Seconds spent in garbage collection (automatic and explicit ``gc.collect()``), measured
    with ``gc.callbacks``; negligible overhead."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._t0 = 0.0

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t0
            self.collections += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._cb)
