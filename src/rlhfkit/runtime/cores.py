"""The cores this process may use, how busy other work keeps them, and what OpenMP's waiting
threads should do about it. Nothing here imports torch: ``rlhfkit demo`` decides before torch's
OpenMP runtime is loaded (it reads its variables once, at load)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


def usable_cores() -> set[int]:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name as the operating system reports it (Linux's ``/proc/cpuinfo``, else
    ``platform.processor()``), or None. Two CPUs with the same torch kernels can still round
    differently (their math libraries take other code paths), so a run records which it was."""
    import platform

    return cpuinfo_field("model name", cpuinfo) or platform.processor() or None


def cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The first non-empty value of a field of Linux's ``/proc/cpuinfo`` (``model name``,
    ``vendor_id``, ...), or None where the file or the field is missing."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name and value.strip():
                    return value.strip()
    except OSError:
        pass
    return None


def busy_cores(window: float = 0.25) -> float:
    """How many of :func:`usable_cores` other work keeps busy now: their busy share of the CPU time
    over ``window`` seconds (Linux's /proc/stat), times their number. Elsewhere the 1-minute load
    average, which lags: it still counts a job that ended a minute ago."""
    cores = usable_cores()

    def busy_and_total() -> tuple[int, int]:
        busy = total = 0
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                    # user nice system idle iowait irq softirq steal
                    ticks = [int(x) for x in fields[:8]]
                    total += sum(ticks)
                    busy += sum(ticks) - ticks[3] - ticks[4]
        return busy, total

    try:
        b0, t0 = busy_and_total()
        time.sleep(window)
        b1, t1 = busy_and_total()
    except (OSError, ValueError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return len(cores) * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def openmp_wait_policy(
    env: Mapping[str, str], busy: float, cores: int, threads: int = 0
) -> str | None:
    """``PASSIVE`` when other work already keeps half our cores busy (``busy``, as
    :func:`busy_cores` measures it, at least ``cores / 2``) or when we will run more ``threads``
    at once than there are ``cores``, else None (OpenMP's own default); None too when the user
    chose (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in ``env``).

    Between two parallel regions OpenMP's threads spin for a while before they sleep. On an idle
    machine that is what keeps the demo's many small 2-thread steps fast: sleeping threads made the
    quick demo 1.3-1.6x slower (its PPO runs 1.5x). On a busy one the spinning threads take the
    cores from the threads with work: the reward model's training took 4-6x the wall time
    (docs/benchmarks.md, "The demo on 2 AVX2 cores" and "OpenMP's waiting threads")."""
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return None
    return "PASSIVE" if busy >= cores / 2 or threads > cores else None


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: as many as it has), then go back to
    the count before it.

    Some of torch's CPU kernels add up their rows in an order set by the number of threads (the
    backward of LayerNorm sums each thread's share of the rows, then the shares): the same
    training on another thread count rounds differently, and after a few hundred optimizer steps
    it is another run. The demo trains with the counts its figures were checked with."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
