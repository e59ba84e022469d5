"""``rlhfkit demo``: the whole pipeline on the built-in world, with a report to look at."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhfkit.cli._common import parse_config
from rlhfkit.runtime.trackers import ReportTo, resolve_report_to


@dataclass
class DemoArgs:
    """Run the whole RLHF pipeline on the built-in world: rank → reward model → PPO (a sensible β
    and a β too low) → hacking scan → report.html and summary.json."""

    out: str = "demo-out"
    """Output directory (report.html, summary.json and every stage's files)."""
    quick: bool = False
    """A smaller run (about half a minute on 2 cores): fewer rankings and a shorter PPO run at a lower
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
    1 with --quick; 1 keeps everything in this process). Neither the samples nor the trained
    models depend on it: the reward model and the PPO runs train on the thread counts the
    figures were checked with (2 and 1, 2 and 2 with --quick), whatever the cores."""
    report_to: list[ReportTo] = field(default_factory=lambda: ["none"])
    """Experiment trackers for the reward model's and each PPO run's metrics and settings: none,
    or any of tensorboard (each run's runs/ directory), wandb, trackio, mlflow."""


def main(argv: list[str]) -> int:
    args = parse_config(
        DemoArgs, argv, prog="rlhfkit demo", description=DemoArgs.__doc__, yaml_config=False
    )
    report_to = resolve_report_to(args.report_to)  # a missing package stops us before any work
    import os
    from dataclasses import replace

    # rlhfkit.demo and its settings do not import torch
    from rlhfkit.demo import DemoSettings, format_summary, run_demo
    from rlhfkit.errors import ConfigError

    settings = DemoSettings.quick() if args.quick else DemoSettings.full()
    if args.processes is not None:
        settings = replace(settings, processes=args.processes)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Before torch (and so its OpenMP runtime) is loaded: see openmp_wait_policy.
    from rlhfkit.runtime import cores
    from rlhfkit.runtime.logs import get_logger

    busy, usable = cores.busy_cores(), len(cores.usable_cores())
    threads = replace(settings, mitigations=args.mitigations).training_threads(usable)
    policy = cores.openmp_wait_policy(os.environ, busy, usable, threads)
    if policy is not None:
        os.environ["OMP_WAIT_POLICY"] = policy
        if busy >= usable / 2:
            why = f"other work keeps {busy:.1f} of the {usable} cores busy"
            then = "slower on a machine that turns idle"
        else:
            why = (
                f"the demo trains on {threads} threads at once (the counts its figures were "
                f"checked with) on {usable} core{'s' if usable > 1 else ''}"
            )
            then = "rather than spin against each other"
        get_logger("demo").info(
            f"{why}: torch's threads will sleep while they wait (OMP_WAIT_POLICY={policy}), "
            f"{then}; set OMP_WAIT_POLICY yourself to choose"
        )
    if args.processes is not None and args.processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {args.processes}")
    summary = run_demo(
        args.out, quick=args.quick, human=args.human, seed=args.seed, human_items=args.human_items,
        mitigations=args.mitigations, settings=settings, report_to=report_to,
    )  # fmt: skip
    print(format_summary(summary))
    print(f"report: {os.path.join(args.out, 'report.html')}")
    return 0
