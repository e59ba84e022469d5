"""The demo's seven stages, each a function that writes its plain files into the output directory
as the stand-alone command would, called in order by :func:`rlhfkit.demo.run_demo`."""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit import world
from rlhfkit.demo.evaluate import evaluate_reward_model
from rlhfkit.demo.ppo_runs import run_ppo
from rlhfkit.demo.sampling import Sampler, heldout_kl
from rlhfkit.demo.settings import DemoSettings
from rlhfkit.runtime.cores import torch_threads
from rlhfkit.runtime.io import write_jsonl
from rlhfkit.world.policy import cached_policy_dir, is_built, shipped_policy_dir

Say = Callable[[str], None]
TOTAL = 7


@dataclass
class Stages:
    """What every stage shares: where it writes, the sizes, the seed, how it talks and samples,
    and the seconds each stage took (``summary.json``'s ``stage_seconds``)."""

    out: Path
    s: DemoSettings
    seed: int
    say: Say
    sample: Sampler
    seconds: dict[str, float] = field(default_factory=dict)
    report_to: tuple[str, ...] = ()  # experiment trackers of the reward model and the PPO runs

    def start(self, n: int | str, text: str) -> float:
        self.say(f"[bold cyan][{n}/{TOTAL}][/] {text}")
        return time.perf_counter()


def build_base_policy(st: Stages) -> tuple[Path, dict[str, Any]]:
    """1. The base policy: a small GPT-2 pretrained on the world's text (cached after the first
    run); returns its directory and its build record."""
    t0 = st.start(
        1, "base policy: the world's GPT-2 (shipped for seeds 0-4, else built and cached)"
    )
    full = world.BaseBuildSettings(seed=st.seed)
    # the fluent base policy whenever it is at hand (shipped, or built by an earlier full demo):
    # the quick build is worse
    quick = st.s.build_quick and not (
        is_built(cached_policy_dir(full)) or shipped_policy_dir(full) is not None
    )
    base_dir = world.build_base_policy(seed=st.seed, quick=quick)
    st.seconds["base_policy"] = time.perf_counter() - t0
    st.say(f"      {base_dir}  ({st.seconds['base_policy']:.0f} s)")
    return base_dir, world.read_build_info(base_dir)


@dataclass(frozen=True)
class Candidates:
    """Stage 2's output: the groups of K base-policy responses to rank."""

    prompts: list[str]  # one per group
    responses: list[list[Any]]  # K Response objects per group
    dropped: int  # groups dropped because a response was empty


def sample_candidates(st: Stages, base_dir: Path, train_prompts: list[str]) -> Candidates:
    """2. K candidates per training prompt; ``out/candidates.jsonl``."""
    from rlhfkit.data import Response

    s = st.s
    t0 = st.start(2, f"sampling {s.k} candidates for {s.groups} training prompts")
    group_prompts = [train_prompts[i % len(train_prompts)] for i in range(s.groups)]
    random.Random(st.seed).shuffle(group_prompts)
    flat_prompts = [p for p in group_prompts for _ in range(s.k)]
    texts, _ = st.sample(base_dir, flat_prompts, s.response_length, st.seed, s.temperature)
    groups = [
        [Response(id=f"r{j}", text=texts[i * s.k + j]) for j in range(s.k)] for i in range(s.groups)
    ]
    # A group with an empty response (the policy emitted EOS at once) cannot be shown to people;
    # such groups are dropped, as an annotation tool would refuse them, and counted.
    keep = [i for i, c in enumerate(groups) if all(r.text.strip() for r in c)]
    cands = Candidates(
        [group_prompts[i] for i in keep], [groups[i] for i in keep], len(groups) - len(keep)
    )
    write_jsonl(
        st.out / "candidates.jsonl",
        (
            {"prompt": p, "responses": [{"id": r.id, "text": r.text} for r in c]}
            for p, c in zip(cands.prompts, cands.responses, strict=True)
        ),
    )
    st.seconds["sample_candidates"] = time.perf_counter() - t0
    if cands.dropped:
        st.say(f"      {cands.dropped} groups dropped: a response was empty")
    return cands


def rank(
    st: Stages, cands: Candidates, human_serve: Callable[..., list[Any]] | None
) -> tuple[list[Any], float]:
    """3. Rank them: simulated annotators (gold utility + Plackett-Luce noise), or people with
    ``human_serve``; ``out/rankings.jsonl``. Returns the rankings and how often their pairs agree
    with gold."""
    from rlhfkit.data import write_rankings
    from rlhfkit.errors import RlhfkitError

    who = (
        "people, in the annotation app"
        if human_serve is not None
        else f"{st.s.annotators_per_prompt} simulated annotators per prompt"
    )
    t0 = st.start(3, "ranking: " + who)
    if human_serve is not None:
        rankings = human_serve(st.out, st.out / "candidates.jsonl", st.say)
    else:
        rankings = world.simulate_rankings(
            cands.prompts, cands.responses, annotators_per_prompt=st.s.annotators_per_prompt,
            seed=st.seed,
        )  # fmt: skip
    if not rankings:
        raise RlhfkitError("no rankings were collected: nothing to train the reward model on")
    write_rankings(st.out / "rankings.jsonl", rankings)
    label_accuracy = world.label_accuracy(rankings)
    st.seconds["rank"] = time.perf_counter() - t0
    st.say(
        f"      {len(rankings)} rankings; their pairs agree with gold {label_accuracy:.1%} of the time"
    )
    return rankings, label_accuracy


def train_reward_model(
    st: Stages, base_dir: Path, train_prompts: list[str], heldout_prompts: list[str]
) -> tuple[Path, Any, dict[str, tuple[float, float]]]:
    """4. The reward model: ranking-native Bradley-Terry on the base policy's backbone, then its
    pairwise accuracy against gold (and the annotators' noise ceiling) on fresh candidate groups
    nobody ranked: (a) for the training prompts, (b) for the held-out topics, whose statements
    (and so whose factual errors) it never saw ranked."""
    from rlhfkit.reward import RewardConfig
    from rlhfkit.reward import train_reward_model as train
    from rlhfkit.reward.model import RewardModel

    s = st.s
    t0 = st.start(4, f"training the reward model ({s.rm_epochs} epochs, ranking-native)")
    rm_dir = st.out / "reward-model"
    with torch_threads(s.rm_threads):
        train(
            RewardConfig(
                model=str(base_dir), data=str(st.out / "rankings.jsonl"), out=str(rm_dir),
                eval_split=0.05, epochs=s.rm_epochs, batch_size=s.rm_batch_size,
                learning_rate=s.rm_learning_rate, warmup_ratio=0.05, seed=st.seed,
                overwrite=True, max_length=128, logging_steps=5, report_to=list(st.report_to),
            )
        )  # fmt: skip
    reward_model = RewardModel.from_pretrained(rm_dir)
    rm_eval = {
        name: evaluate_reward_model(
            st.sample, reward_model, base_dir, prompts, s.eval_groups, s.k, s.response_length,
            st.seed + offset, s.temperature,
        )
        for name, prompts, offset in (("heldout", train_prompts, 1), ("heldout_topics", heldout_prompts, 3))
    }  # fmt: skip
    st.seconds["reward_model"] = time.perf_counter() - t0
    (acc, ceiling), (t_acc, t_ceiling) = rm_eval["heldout"], rm_eval["heldout_topics"]
    st.say(
        f"      pairwise accuracy vs gold on unranked groups {acc:.3f} (noise ceiling "
        f"{ceiling:.3f}); on held-out topics {t_acc:.3f} (ceiling {t_ceiling:.3f})"
    )
    return rm_dir, reward_model, rm_eval


def tune_policies(
    st: Stages, base_dir: Path, rm_dir: Path, reward_model: Any, train_prompts: list[str],
    console: Any, workers: int, ensemble_dir: Path | None = None,
) -> dict[str, Path]:  # fmt: skip
    """5. PPO once per run (β sensible, β too low; with ``ensemble_dir``, the mitigation runs on
    the ensemble too) from the same base policy, with the world's gold reward logged, never
    trained on; returns each run's directory."""
    from rlhfkit.ppo import PPOConfig

    s = st.s
    runs = list(s.runs) + (list(s.mitigation_runs) if ensemble_dir is not None else [])
    write_jsonl(st.out / "prompts-train.jsonl", ({"prompt": p} for p in train_prompts))
    configs = {
        run.name: PPOConfig(
            policy=str(base_dir), prompts=str(st.out / "prompts-train.jsonl"),
            out=str(st.out / "ppo" / run.name),
            reward_model=str(rm_dir if run.ensemble_objective is None else ensemble_dir),
            ensemble_objective=run.ensemble_objective or "mean", uwo_lambda=run.uwo_lambda,
            total_episodes=s.ppo_episodes, batch_size=s.ppo_batch_size,
            num_mini_batches=s.ppo_mini_batches, num_ppo_epochs=s.ppo_epochs,
            response_length=s.response_length,
            temperature=s.temperature, kl_coef=run.kl_coef, learning_rate=s.ppo_learning_rate,
            seed=st.seed, sample_every=max(1, s.ppo_episodes // s.ppo_batch_size // 6),
            num_samples=4, hacking_check_every=s.hacking_check_every, hacking_num_prompts=64,
            # The promises (README, docs/world.md) were measured with the value head on the
            # policy trunk; "auto" would add the reward model's frozen trunk here.
            critic="head",
            overwrite=True,  # a second demo into the same --out retrains its runs
            report_to=list(st.report_to),
        )
        for run in runs
    }  # fmt: skip
    processes = min(len(configs), workers)
    side_by_side = f", side by side in {processes} processes" if processes > 1 else ""
    if s.ppo_threads:
        side_by_side += f", {s.ppo_threads} thread{'s' if s.ppo_threads > 1 else ''} each"
    t0 = st.start(5, f"PPO, {len(runs)} runs from the same base policy{side_by_side}")
    for run in runs:
        st.say(f"      {run.name}: {run.description}")
    run_seconds = run_ppo(configs, reward_model, st.say, console, processes, s.ppo_threads)
    st.seconds.update({f"ppo_{name}": sec for name, sec in run_seconds.items()})
    st.seconds["ppo"] = time.perf_counter() - t0
    return {name: Path(config.out) for name, config in configs.items()}


def compare_policies(
    st: Stages, base_dir: Path, run_dirs: dict[str, Path], reward_model: Any,
    heldout_prompts: list[str], ensemble: Any | None = None,
) -> tuple[list[str], dict[str, dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """6. Base vs each tuned policy on the same held-out prompts: proxy and gold reward, KL, valid
    text, the hacking scan, the verdict from what is known without gold (and, with an
    ``ensemble``, a second verdict that also weighs its members' disagreement), and Gao et al.'s
    RL fit through the run's logged gold against √KL; ``out/heldout-NAME.jsonl``. Returns the
    prompts, each policy's outputs, and each run's summary."""
    from rlhfkit.hacking.monitor import HackingMonitor

    s = st.s
    t0 = st.start(
        6, f"comparing {s.eval_samples} held-out responses of each policy with the base policy's"
    )
    prompts = [heldout_prompts[i % len(heldout_prompts)] for i in range(s.eval_samples)]
    policies = {"base": base_dir, **{name: d / "policy" for name, d in run_dirs.items()}}
    outputs = {
        name: _policy_outputs(st, name, model_dir, base_dir, prompts, reward_model)
        for name, model_dir in policies.items()
    }
    base = outputs["base"]

    def score(model: Any) -> Callable[[list[str], list[str]], list[float]]:
        return lambda p, t: model.score(p, t).tolist()

    monitor = HackingMonitor(prompts, base["texts"], base["ended"],
                             reward_fn=score(reward_model), probe_top=3)  # fmt: skip

    def spread(texts: list[str]) -> list[float]:  # the ensemble members' std per answer
        return ensemble.score_members(prompts, texts).std(0, unbiased=False).tolist()

    base_spread = spread(base["texts"]) if ensemble is not None else None
    specs = {run.name: run for run in [*s.runs, *s.mitigation_runs]}
    runs = []
    for name, run_dir in run_dirs.items():
        record = _run_record(specs[name], run_dir, base, outputs[name])
        checked = monitor.check(outputs[name]["texts"], outputs[name]["ended"])
        record.update(_verdicts(checked, monitor.alpha, base_spread, spread, outputs[name]))
        record["gao_fit"] = _gao_fit(run_dir, name)
        runs.append(record)
    st.seconds["compare"] = time.perf_counter() - t0
    return prompts, outputs, runs


def _run_record(run: Any, run_dir: Path, base: dict, tuned: dict) -> dict[str, Any]:
    """One run's held-out figures next to the base policy's, its scan and "fantastic"."""
    from rlhfkit.hacking import scan, word_frequency_shift

    result = scan(base["texts"], tuned["texts"])
    fantastic = word_frequency_shift(base["texts"], tuned["texts"], "fantastic")
    metrics = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    record = {
        "name": run.name,
        "beta": run.kl_coef,
        "kl": _mean([m["objective/kl"] for m in metrics[-3:]]),
        "kl_heldout": tuned["kl"],
        "proxy_reward_base": _mean(base["proxy"]),
        "proxy_reward_tuned": _mean(tuned["proxy"]),
        "gold_reward_base": _mean(base["gold"]),
        "gold_reward_tuned": _mean(tuned["gold"]),
        # how far each gain (tuned − base mean) moves with which answers were sampled
        "proxy_gain_se": gain_standard_error(base["proxy"], tuned["proxy"]),
        "gold_gain_se": gain_standard_error(base["gold"], tuned["gold"]),
        "flagged_tokens": [f.token for f in result.flagged],
        "fantastic": fantastic.to_dict(),
        "valid_rate_base": base["eval"]["valid_rate"],
        "valid_rate_tuned": tuned["eval"]["valid_rate"],
        "empty_rate_base": base["eval"]["empty_rate"],
        "empty_rate_tuned": tuned["eval"]["empty_rate"],
        "scan": result.to_dict(),
    }
    if run.ensemble_objective is not None:
        record["ensemble_objective"] = run.ensemble_objective
    return record


def _verdicts(
    checked: Any, alpha: float, base_spread: list[float] | None,
    spread: Callable[[list[str]], list[float]], tuned: dict,
) -> dict[str, Any]:  # fmt: skip
    """The verdict without gold; with an ensemble, the same evidence and the members'
    disagreement on the tuned answers."""
    from rlhfkit.hacking.monitor import disagreement_rise
    from rlhfkit.hacking.verdict import judge

    evidence = {
        "drift": checked.drift.to_dict(), "probes": [p.to_dict() for p in checked.probes],
    }  # fmt: skip
    out = {"verdict": {**checked.verdict.to_dict(), **evidence, "disagreement": None}}
    if base_spread is not None:  # an ensemble
        rise = disagreement_rise(base_spread, spread(tuned["texts"]), alpha)
        again = judge(checked.flagged, checked.drift, checked.probes, rise)
        out["verdict_with_ensemble"] = {
            **again.to_dict(), **evidence, "disagreement": rise.to_dict(),
        }  # fmt: skip
    return out


def _gao_fit(run_dir: Path, name: str) -> dict[str, Any] | None:
    """Gao et al.'s RL fit through the run's logged gold against √KL."""
    from rlhfkit.hacking.overoptimization import fit_gao
    from rlhfkit.report import load_run
    from rlhfkit.report.figures import run_gao_points

    d, _, gold_gain = run_gao_points(load_run(run_dir, name))
    fit = fit_gao(d, gold_gain, "rl")
    return fit.to_dict() if fit is not None else None


def _policy_outputs(
    st: Stages, name: str, model_dir: Path, base_dir: Path, prompts: list[str], reward_model: Any
) -> dict[str, Any]:
    """One policy's held-out responses with their proxy and gold rewards and its KL from the
    base policy on these very responses, where proxy and gold are measured."""
    s = st.s
    texts, ended, ids = st.sample.with_ids(
        model_dir, prompts, s.response_length, st.seed + 2, s.temperature
    )
    ev = world.evaluate_texts(prompts, texts, ended)
    proxy = reward_model.score(prompts, texts).tolist()
    write_jsonl(
        st.out / f"heldout-{name}.jsonl",
        ({"prompt": p, "response": t, "proxy_reward": pr, "gold_reward": g, "ended_with_eos": e}
         for p, t, pr, g, e in zip(prompts, texts, proxy, ev.gold, ended, strict=True)),
    )  # fmt: skip
    kl = 0.0 if name == "base" else heldout_kl(model_dir, base_dir, prompts, ids, s.temperature)
    return {
        "texts": texts, "ended": ended, "proxy": proxy, "gold": ev.gold, "eval": ev.summary(),
        "kl": kl,
    }  # fmt: skip


def _mean(xs: Sequence[float]) -> float:
    return float(statistics.fmean(xs)) if xs else float("nan")


def gain_standard_error(base: Sequence[float], tuned: Sequence[float]) -> float:
    """The standard error of ``mean(tuned) − mean(base)`` for two independent samples (each
    policy samples its own answers): ``sqrt(var(base)/n_base + var(tuned)/n_tuned)`` with each
    sample's unbiased variance. NaN with fewer than two values on a side."""
    if len(base) < 2 or len(tuned) < 2:
        return float("nan")
    return math.sqrt(
        statistics.variance(base) / len(base) + statistics.variance(tuned) / len(tuned)
    )
