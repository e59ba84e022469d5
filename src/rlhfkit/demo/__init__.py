"""``rlhfkit demo``: the whole RLHF pipeline on the synthetic world, where the truth is known.

1. build (or load the cached) base policy of the world
2. sample K candidates per training prompt from it
3. rank them: simulated annotators (or people, with ``--human``)
4. train the reward model ranking-natively; evaluate it against gold on held-out prompts
5. PPO twice from the same base: a sensible β and a β too low
6. compare each tuned policy's held-out outputs with the base policy's (hacking scan, a verdict
   without gold, Gao et al.'s fit through gold against √KL)
7. write report.html and summary.json

With ``--mitigations`` (:mod:`rlhfkit.demo.mitigations`): 4b a reward-model ensemble, PPO on it
at the low β in stage 5, and 6b best-of-n curves.

Every stage (``rlhfkit.demo.stages``) writes plain files into the output directory, as the
stand-alone commands would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rlhfkit.demo.ppo_runs import default_processes, run_ppo
from rlhfkit.demo.sampling import Sampler, start_worker_server
from rlhfkit.demo.settings import DemoSettings, PPORunSpec
from rlhfkit.demo.summary import format_summary
from rlhfkit.runtime.io import write_json

__all__ = ["DemoSettings", "PPORunSpec", "format_summary", "run_demo", "run_ppo"]

Say = Callable[[str], None]


def run_demo(
    out: str | Path = "demo-out",
    quick: bool = False,
    human: bool = False,
    seed: int = 0,
    settings: DemoSettings | None = None,
    say: Say | None = None,
    human_serve: Callable[..., list[Any]] | None = None,
    human_items: int = 24,
    mitigations: bool = False,
    report_to: Sequence[str] = (),
) -> dict[str, Any]:
    """Run every stage into ``out``; returns the summary (also written to ``out/summary.json``).
    ``report_to``: experiment trackers for the reward model's and the PPO runs' metrics
    (:mod:`rlhfkit.runtime.trackers`).

    ``mitigations`` (or ``settings.mitigations``) adds a reward-model ensemble, PPO on it at the
    low β and best-of-n curves (:mod:`rlhfkit.demo.mitigations`); ``summary["mitigations"]``.

    With ``settings.processes`` > 1 (the default on a machine with several cores) the demo starts
    worker processes: call it from a script under ``if __name__ == "__main__":``."""
    s = _resolved_settings(settings, quick, human, human_items, mitigations)
    workers = s.processes or default_processes()
    if workers > 1:  # the workers' imports, on another core, while this process does its own
        start_worker_server()

    import torch
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from rlhfkit.demo import stages
    from rlhfkit.demo.report import render_demo_report
    from rlhfkit.runtime.logs import info_enabled

    hf_logging.disable_progress_bar()
    # --quiet: no stage lines or progress bars (the summary still tells what the monitor found)
    console = Console(stderr=True, quiet=not info_enabled())
    say = say or console.print
    if human:
        human_serve = human_serve or _serve_for_humans
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    sample = Sampler(workers, threads=max(1, torch.get_num_threads() // workers))
    st = stages.Stages(out, s, seed, say, sample, report_to=tuple(report_to))
    try:
        r = _run_stages(st, console, workers, human_serve if human else None)  # 1-6
    finally:
        sample.close()

    # 7. the report and the summary
    t0 = st.start(7, "writing report.html and summary.json")
    summary = _summary(r, st, t_start, quick, human, seed)
    render_demo_report(out, summary, r.run_dirs, r.rm_dir, r.outputs, r.cmp_prompts)
    st.seconds["report"] = time.perf_counter() - t0
    summary["wall_seconds"] = time.perf_counter() - t_start
    write_json(out / "summary.json", summary)
    return summary


def _resolved_settings(
    settings: DemoSettings | None, quick: bool, human: bool, human_items: int, mitigations: bool
) -> DemoSettings:
    s = settings or (DemoSettings.quick() if quick else DemoSettings.full())
    if mitigations:
        s = replace(s, mitigations=True)
    if human:
        # People rank a few dozen groups, not a thousand: fewer rankings, a weaker reward model.
        s = replace(s, groups=human_items)
    return s


@dataclass
class _Results:
    """What stages 1-6 produced, for the report and the summary."""

    base_dir: Path
    build_info: dict[str, Any]
    cands: Any
    rankings: list[Any]
    label_accuracy: float
    rm_dir: Path
    rm_eval: dict[str, Any]
    run_dirs: Any
    cmp_prompts: list[str]
    outputs: Any
    runs: list[dict[str, Any]]
    ens_eval: Any = None
    bon: Any = None


def _run_stages(st: Any, console: Any, workers: int, human_serve: Callable | None) -> _Results:
    """Stages 1-6 in order (4b and 6b with --mitigations)."""
    from rlhfkit import world
    from rlhfkit.demo import mitigations as mitigation_stages
    from rlhfkit.demo import stages

    s = st.s
    train_prompts = [world.make_prompt(t) for t in world.TRAIN_TOPICS]
    heldout_prompts = [world.make_prompt(t) for t in world.HELDOUT_TOPICS]
    base_dir, build_info = stages.build_base_policy(st)  # 1
    cands = stages.sample_candidates(st, base_dir, train_prompts)  # 2
    rankings, label_accuracy = stages.rank(st, cands, human_serve)  # 3
    rm_dir, reward_model, rm_eval = stages.train_reward_model(
        st, base_dir, train_prompts, heldout_prompts
    )  # 4
    ens_dir = ensemble = ens_eval = None
    if s.mitigations:
        ens_dir, ensemble, ens_eval = mitigation_stages.train_ensemble(
            st, base_dir, train_prompts, heldout_prompts
        )  # 4b
    run_dirs = stages.tune_policies(
        st, base_dir, rm_dir, reward_model, train_prompts, console, workers, ens_dir
    )  # 5
    cmp_prompts, outputs, runs = stages.compare_policies(
        st, base_dir, run_dirs, reward_model, heldout_prompts, ensemble
    )  # 6
    bon = None
    if s.mitigations:
        bon = mitigation_stages.best_of_n_curves(
            st, base_dir, reward_model, ensemble, heldout_prompts
        )  # 6b
    return _Results(
        base_dir, build_info, cands, rankings, label_accuracy, rm_dir, rm_eval, run_dirs,
        cmp_prompts, outputs, runs, ens_eval, bon,
    )  # fmt: skip


def _summary(
    r: _Results, st: Any, t_start: float, quick: bool, human: bool, seed: int
) -> dict[str, Any]:
    (rm_accuracy, noise_ceiling), (topics_accuracy, topics_ceiling) = (
        r.rm_eval["heldout"], r.rm_eval["heldout_topics"],
    )  # fmt: skip
    summary = {
        "rm_heldout_accuracy": rm_accuracy,
        "rm_noise_ceiling": noise_ceiling,
        "rm_heldout_topics_accuracy": topics_accuracy,
        "rm_heldout_topics_noise_ceiling": topics_ceiling,
        "rm_label_accuracy": r.label_accuracy,
        "n_rankings": len(r.rankings),
        "dropped_candidate_groups": r.cands.dropped,
        "wall_seconds": time.perf_counter() - t_start,  # the report's subtitle shows it
        "quick": quick,
        "human": human,
        "seed": seed,
        "base_policy": str(r.base_dir),
        "base_policy_build": r.build_info.get("evaluation", r.build_info),
        "runs": r.runs,
        "stage_seconds": st.seconds,
        "settings": asdict(st.s),
        "machine": _machine(),
    }
    if st.s.mitigations:
        summary["mitigations"] = {"ensemble": r.ens_eval, "best_of_n": r.bon}
    return summary


def _machine() -> dict[str, Any]:
    """What decides the demo's arithmetic besides its settings: README's figures came from torch's
    AVX512 kernels on an AMD EPYC; a CPU without them rounds differently, and so does an Intel one
    with them (docs/benchmarks.md, "Thread counts and the demo's figures", "Another CPU, other
    figures")."""
    import platform

    import torch

    from rlhfkit.runtime.cores import cpu_model, usable_cores

    return {
        "cpu": cpu_model(),
        "cores": len(usable_cores()),
        "torch_threads": torch.get_num_threads(),  # sampling's; training's are in the settings
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "platform": platform.machine(),
    }


def _serve_for_humans(out: Path, candidates_path: Path, say: Say) -> list[Any]:
    """Serve the candidates in the annotation app and wait until people have ranked them all
    (Ctrl-C stops waiting and keeps what was ranked so far)."""
    from rlhfkit.collect.annotate.serve_local import collect_rankings

    return collect_rankings(out / "annotations.db", candidates_path, say)
