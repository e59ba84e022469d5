"""``rlhfkit demo``: the whole pipeline on the built-in world, with a report to look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlhfkit.cli._common import parse_config
from rlhfkit.runtime.trackers import ReportTo, resolve_report_to


@dataclass
class DemoArgs:
    """Run the whole RLHF pipeline on the built-in world: rank → reward model → PPO (a sensible β
    and a β too low) → hacking scan → report.html and summary.json."""

    out: str = "demo-out"
    """Output directory (report.html, summary.json and every stage's files)."""
    quick: bool = False
    """A smaller run (about a minute on 2 cores): fewer rankings and a shorter PPO run at a lower
    β, on fewer held-out samples."""
    human: bool = False
    """Rank the candidates yourself in the annotation app instead of simulated annotators."""
    human_items: int = 24
    """With --human: how many prompts (each with 4 responses) to rank."""
    seed: int = 0
    """Random seed of every stage."""
    mitigations: bool = False
    """Also measure mitigations of reward hacking: a reward-model ensemble, PPO at the low β on
    its worst-case and uncertainty-weighted objectives, and best-of-n curves (docs/hacking.md,
    "Mitigations"). Takes about twice as long."""
    processes: int | None = None
    """Worker processes for sampling and the two PPO runs (default: one per core torch may use,
    1 with --quick; 1 keeps everything in this process). The samples do not depend on it."""
    report_to: list[ReportTo] = field(default_factory=lambda: ["none"])
    """Experiment trackers for the reward model's and each PPO run's metrics and settings: none,
    or any of tensorboard (each run's runs/ directory), wandb, trackio, mlflow."""


def openmp_wait_policy(env: dict | Any, busy: float, cores: int) -> str | None:
    """``PASSIVE`` when other work already keeps half our cores busy (``busy``, measured at the
    start by :func:`busy_cores`, at least ``cores / 2``), else None (OpenMP's own default); None
    too when the user chose (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set).

    Between two parallel regions OpenMP's threads spin for a while before they sleep. On an idle
    machine that is what keeps the demo's many small 2-thread steps fast: sleeping threads made the
    quick demo 1.3-1.6x slower (its PPO runs 1.5x). On a busy one the spinning threads take the cores
    from the threads with work: the reward model's training took 4-6x the wall time
    (docs/benchmarks.md, "The demo on 2 AVX2 cores" and "OpenMP's waiting threads")."""
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return None
    return "PASSIVE" if busy >= cores / 2 else None


def busy_cores(window: float = 0.25) -> float:
    """How many of the cores this process may use other work keeps busy now: their busy share of
    the CPU time over ``window`` seconds (Linux's /proc/stat), times their number. Elsewhere the
    1-minute load average, which lags: it still counts a job that ended a minute ago."""
    import os
    import time

    def busy_and_total() -> tuple[int, int]:
        busy = total = 0
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                    ticks = [
                        int(x) for x in fields[:8]
                    ]  # user nice system idle iowait irq softirq steal
                    total += sum(ticks)
                    busy += sum(ticks) - ticks[3] - ticks[4]
        return busy, total

    cores = _our_cores()
    try:
        b0, t0 = busy_and_total()
        time.sleep(window)
        b1, t1 = busy_and_total()
    except (OSError, ValueError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return len(cores) * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def _our_cores() -> set[int]:
    import os

    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def main(argv: list[str]) -> int:
    args = parse_config(
        DemoArgs, argv, prog="rlhfkit demo", description=DemoArgs.__doc__, yaml_config=False
    )
    report_to = resolve_report_to(args.report_to)  # a missing package stops us before any work
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Before torch (and so its OpenMP runtime) is loaded: see openmp_wait_policy.
    policy = openmp_wait_policy(os.environ, busy_cores(), len(_our_cores()))
    if policy is not None:
        os.environ["OMP_WAIT_POLICY"] = policy
    from dataclasses import replace

    from rlhfkit.demo import DemoSettings, format_summary, run_demo
    from rlhfkit.errors import ConfigError

    if args.processes is not None and args.processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {args.processes}")
    settings = DemoSettings.quick() if args.quick else DemoSettings.full()
    summary = run_demo(
        args.out, quick=args.quick, human=args.human, seed=args.seed, human_items=args.human_items,
        mitigations=args.mitigations,
        settings=settings if args.processes is None else replace(settings, processes=args.processes),
        report_to=report_to,
    )  # fmt: skip
    print(format_summary(summary))
    print(f"report: {os.path.join(args.out, 'report.html')}")
    return 0
