"""``rlhfkit demo``: the whole RLHF pipeline on the synthetic world, where the truth is known.

1. build (or load the cached) base policy of the world
2. sample K candidates per training prompt from it
3. rank them: simulated annotators (or people, with ``--human``)
4. train the reward model ranking-natively; evaluate it against gold on held-out prompts
5. PPO twice from the same base: a sensible β and a β too low
6. compare each tuned policy's held-out outputs with the base policy's (hacking scan)
7. write report.html and summary.json

Every stage (``rlhfkit.demo.stages``) writes plain files into the output directory, as the
stand-alone commands would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rlhfkit.demo.ppo_runs import default_processes, run_ppo
from rlhfkit.demo.sampling import Sampler
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
) -> dict[str, Any]:
    """Run every stage into ``out``; returns the summary (also written to ``out/summary.json``).

    With ``settings.processes`` > 1 (the default on a machine with several cores) the demo spawns
    worker processes: call it from a script under ``if __name__ == "__main__":``."""
    import torch
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from rlhfkit import world
    from rlhfkit.demo import stages
    from rlhfkit.demo.report import render_demo_report

    hf_logging.disable_progress_bar()
    console = Console(stderr=True)
    say = say or console.print
    s = settings or (DemoSettings.quick() if quick else DemoSettings.full())
    if human:
        # People rank a few dozen groups, not a thousand: fewer rankings, a weaker reward model.
        s = replace(s, groups=human_items)
        human_serve = human_serve or _serve_for_humans
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    workers = s.processes or default_processes()
    sample = Sampler(workers, threads=max(1, torch.get_num_threads() // workers))
    st = stages.Stages(out, s, seed, say, sample)
    train_prompts = [world.make_prompt(t) for t in world.TRAIN_TOPICS]
    heldout_prompts = [world.make_prompt(t) for t in world.HELDOUT_TOPICS]
    try:
        base_dir, build_info = stages.build_base_policy(st)  # 1
        cands = stages.sample_candidates(st, base_dir, train_prompts)  # 2
        rankings, label_accuracy = stages.rank(st, cands, human_serve if human else None)  # 3
        rm_dir, reward_model, rm_eval = stages.train_reward_model(
            st, base_dir, train_prompts, heldout_prompts
        )  # 4
        run_dirs = stages.tune_policies(
            st, base_dir, rm_dir, reward_model, train_prompts, console, workers
        )  # 5
        cmp_prompts, outputs, runs = stages.compare_policies(
            st, base_dir, run_dirs, reward_model, heldout_prompts
        )  # 6
    finally:
        sample.close()

    # 7. the report and the summary
    t0 = st.start(7, "writing report.html and summary.json")
    (rm_accuracy, noise_ceiling), (topics_accuracy, topics_ceiling) = (
        rm_eval["heldout"], rm_eval["heldout_topics"],
    )  # fmt: skip
    summary = {
        "rm_heldout_accuracy": rm_accuracy,
        "rm_noise_ceiling": noise_ceiling,
        "rm_heldout_topics_accuracy": topics_accuracy,
        "rm_heldout_topics_noise_ceiling": topics_ceiling,
        "rm_label_accuracy": label_accuracy,
        "n_rankings": len(rankings),
        "dropped_candidate_groups": cands.dropped,
        "wall_seconds": time.perf_counter() - t_start,  # the report's subtitle shows it
        "quick": quick,
        "human": human,
        "seed": seed,
        "base_policy": str(base_dir),
        "base_policy_build": build_info.get("evaluation", build_info),
        "runs": runs,
        "stage_seconds": st.seconds,
        "settings": asdict(s),
    }
    render_demo_report(out, summary, run_dirs, rm_dir, outputs, cmp_prompts)
    st.seconds["report"] = time.perf_counter() - t0
    summary["wall_seconds"] = time.perf_counter() - t_start
    write_json(out / "summary.json", summary)
    return summary


def _serve_for_humans(out: Path, candidates_path: Path, say: Say) -> list[Any]:
    """Serve the candidates in the annotation app and wait until people have ranked them all
    (Ctrl-C stops waiting and keeps what was ranked so far)."""
    from rlhfkit.collect.annotate.serve_local import collect_rankings

    return collect_rankings(out / "annotations.db", candidates_path, say)
