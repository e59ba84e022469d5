"""``rlhfkit demo``: the whole RLHF pipeline on the synthetic world, where the truth is known.

1. build (or load the cached) base policy of the world
2. sample K candidates per training prompt from it
3. rank them: simulated annotators (or people, with ``--human``)
4. train the reward model ranking-natively; evaluate it against gold on held-out prompts
5. PPO twice from the same base: a sensible β and a β too low
6. compare each tuned policy's held-out outputs with the base policy's (hacking scan)
7. write report.html and summary.json

Every stage writes plain files into the output directory, as the stand-alone commands would.
"""

from __future__ import annotations

import json
import random
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.markup import escape

from rlhfkit.io import write_json, write_jsonl
from rlhfkit.world.policy import SAMPLING_TEMPERATURE, cached_policy_dir, is_built


@dataclass
class PPORunSpec:
    """One PPO run of the demo."""

    name: str
    kl_coef: float
    description: str


@dataclass
class DemoSettings:
    """Sizes of every stage; ``full()`` is the default run, ``quick()`` the ≤ 60 s one."""

    build_quick: bool
    """Build the small, barely fluent quick base policy (unless the full one is already cached)."""
    groups: int
    """Candidate groups (training prompts with K responses each) to rank."""
    k: int
    annotators_per_prompt: int
    rm_epochs: int
    rm_batch_size: int
    rm_learning_rate: float
    eval_groups: int
    """Held-out groups of K candidates used to measure the reward model against gold."""
    ppo_episodes: int
    ppo_batch_size: int
    ppo_learning_rate: float
    ppo_mini_batches: int
    response_length: int
    eval_samples: int
    """Held-out responses sampled from each policy for the comparison."""
    hacking_check_every: int
    temperature: float = SAMPLING_TEMPERATURE
    """Sampling temperature of every stage (candidates, PPO, comparison), as in lm-human-preferences:
    the base policy is a small model, and at 0.7 most of its samples are fluent world text."""
    runs: list[PPORunSpec] = field(default_factory=list)
    processes: int | None = None
    """Processes that share the sampling and train the PPO runs side by side (``None``: one per
    core torch may use, so 1 with ``OMP_NUM_THREADS=1``). A model this small keeps one core busy far
    better than it splits its matrix products over two. The samples do not depend on it; the
    number of threads each stage gets can change float rounding, and so the trained models a little."""

    @classmethod
    def full(cls) -> DemoSettings:
        return cls(
            build_quick=False, groups=1000, k=4, annotators_per_prompt=2,
            rm_epochs=2, rm_batch_size=32, rm_learning_rate=1e-3, eval_groups=150,
            ppo_episodes=2880, ppo_batch_size=64, ppo_learning_rate=1e-4, ppo_mini_batches=2,
            response_length=48, eval_samples=384, hacking_check_every=15,
            runs=[
                PPORunSpec("sensible-beta", 0.1, "β = 0.1: the policy improves while staying near the base"),
                PPORunSpec("low-beta", 0.005, "β = 0.005: too low, the policy games the reward model"),
            ],
        )  # fmt: skip

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(
            build_quick=True, groups=240, k=4, annotators_per_prompt=2,
            rm_epochs=1, rm_batch_size=16, rm_learning_rate=2e-3, eval_groups=40,
            ppo_episodes=640, ppo_batch_size=32, ppo_learning_rate=1e-4, ppo_mini_batches=2,
            response_length=40, eval_samples=128, hacking_check_every=10,
            # Models this small finish before worker processes would pay for their start-up
            # (2 cores: 43 s in one process, 53 s in two).
            processes=1,
            runs=[
                PPORunSpec("sensible-beta", 0.1, "β = 0.1: the policy improves while staying near the base"),
                PPORunSpec("low-beta", 0.01, "β = 0.01: too low, the policy games the reward model"),
            ],
        )  # fmt: skip


Say = Callable[[str], None]


def _stage(say: Say, n: int, total: int, text: str) -> float:
    say(f"[bold cyan][{n}/{total}][/] {text}")
    return time.perf_counter()


@contextmanager
def _warnings_to(say: Say) -> Iterator[None]:
    """Show warnings raised inside (e.g. the live hacking monitor's) as demo output lines rather
    than as Python warnings with a file name and a source line."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        say(f"      [yellow]{escape(str(message))}[/]")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


SAMPLE_CHUNK = 256
"""Prompts per sampling task. Each chunk has its own seed, so the samples are the same however many
processes share the work."""


class _Sampler:
    """Samples responses from the world's policies (no top-k/top-p), chunk by chunk: in ``processes``
    spawned workers, started on first use and reused by every stage, or in this process."""

    def __init__(self, processes: int, threads: int) -> None:
        self.processes = processes
        self.threads = threads
        self._pool: Any = None

    def __call__(
        self, model_dir: Path, prompts: Sequence[str], max_new_tokens: int, seed: int,
        temperature: float,
    ) -> tuple[list[str], list[bool]]:  # fmt: skip
        """One response per prompt, and whether it ended with EOS."""
        texts, ended, _ids = self.with_ids(model_dir, prompts, max_new_tokens, seed, temperature)
        return texts, ended

    def with_ids(
        self, model_dir: Path, prompts: Sequence[str], max_new_tokens: int, seed: int,
        temperature: float,
    ) -> tuple[list[str], list[bool], list[list[int]]]:  # fmt: skip
        """The same, with each response's token ids (through its EOS)."""
        tasks = [
            (str(model_dir), list(prompts[i : i + SAMPLE_CHUNK]), max_new_tokens,
             seed * 1_000_003 + i // SAMPLE_CHUNK, temperature)
            for i in range(0, len(prompts), SAMPLE_CHUNK)
        ]  # fmt: skip
        if self.processes > 1:
            results = list(self._workers().map(_sample_chunk, *zip(*tasks, strict=True)))
        else:
            results = [_sample_chunk(*task) for task in tasks]
        texts = [t for chunk, _, _ in results for t in chunk]
        ended = [e for _, chunk, _ in results for e in chunk]
        ids = [i for _, _, chunk in results for i in chunk]
        return texts, ended, ids

    def _workers(self) -> Any:
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=mp.get_context("spawn"),
                initializer=_init_worker, initargs=(self.threads,),
            )  # fmt: skip
        return self._pool

    def close(self) -> None:
        _LOADED.clear()  # a later demo may retrain a policy in the same directory
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _init_worker(threads: int) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # "Loading weights" bars would cut into the demo's output


_LOADED: dict[str, tuple[Any, Any]] = {}
"""Policies loaded by this process for sampling, by directory (a run's policy is sampled once per
stage, the base policy by several stages)."""


def _sample_chunk(
    model_dir: str, prompts: list[str], max_new_tokens: int, seed: int, temperature: float
) -> tuple[list[str], list[bool], list[list[int]]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.world.policy import generate_responses

    if model_dir not in _LOADED:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        _LOADED[model_dir] = (model, tokenizer)
    model, tokenizer = _LOADED[model_dir]
    return generate_responses(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
        seed=seed, return_ids=True,
    )  # fmt: skip


def _heldout_kl(
    policy_dir: Path, base_dir: Path, prompts: Sequence[str], response_ids: Sequence[Sequence[int]],
    temperature: float,
) -> float:  # fmt: skip
    """Mean over the policy's own samples of ``log π − log π_base`` summed over each response: the
    k1 estimate of ``KL(π ‖ π_base)`` per response (docs/metrics.md), on the responses that proxy
    and gold are measured on. Per-response KL is heavy-tailed (a few responses the base finds very
    unlikely), so this mean over all the held-out responses is steadier than a training batch's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.world.policy import response_logprobs

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    logprobs = []
    for model_dir in (policy_dir, base_dir):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        logprobs.append(response_logprobs(model, tokenizer, prompts, response_ids, temperature))
    return _mean([p - b for p, b in zip(*logprobs, strict=True)])


def _pairwise_accuracy_vs_gold(scores: list[list[float]], gold: list[list[float]]) -> float:
    """Share of pairs (strictly ordered by gold) that the reward model orders the same way."""
    from rlhfkit.world.annotators import GOLD_TIE_TOLERANCE

    right = total = 0
    for s, g in zip(scores, gold, strict=True):
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                if abs(g[i] - g[j]) <= GOLD_TIE_TOLERANCE:
                    continue
                total += 1
                right += (s[i] - s[j]) * (g[i] - g[j]) > 0
    return right / total if total else float("nan")


def _evaluate_reward_model(
    sample: _Sampler,
    reward_model: Any,
    base_dir: Path,
    prompts: Sequence[str],
    n_groups: int,
    k: int,
    response_length: int,
    seed: int,
    temperature: float,
) -> tuple[float, float]:
    """Pairwise accuracy against gold, and the annotators' noise ceiling, on ``n_groups`` fresh
    groups of ``k`` base-policy candidates for prompts cycling over ``prompts``."""
    from rlhfkit import world

    group_prompts = [prompts[i % len(prompts)] for i in range(n_groups)]
    flat_prompts = [p for p in group_prompts for _ in range(k)]
    texts, _ = sample(base_dir, flat_prompts, response_length, seed, temperature)
    flat_scores = reward_model.score(flat_prompts, texts).tolist()
    scores = [flat_scores[i * k : (i + 1) * k] for i in range(n_groups)]
    gold = [
        [world.gold_utility(p, t) for t in texts[i * k : (i + 1) * k]]
        for i, p in enumerate(group_prompts)
    ]
    return _pairwise_accuracy_vs_gold(scores, gold), world.noise_ceiling(gold)


def _mean(xs: Sequence[float]) -> float:
    return float(statistics.fmean(xs)) if xs else float("nan")


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

    hf_logging.disable_progress_bar()
    console = Console(stderr=True)
    say = say or console.print
    s = settings or (DemoSettings.quick() if quick else DemoSettings.full())
    if human:
        # People rank a few dozen groups, not a thousand: fewer rankings, a weaker reward model.
        s = replace(s, groups=human_items)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    workers = s.processes or _default_processes()
    sample = _Sampler(workers, threads=max(1, torch.get_num_threads() // workers))
    try:
        return _run_stages(
            out, s, quick, human, seed, say, console, human_serve, sample, workers, t_start
        )
    finally:
        sample.close()


def _run_stages(
    out: Path, s: DemoSettings, quick: bool, human: bool, seed: int, say: Say, console: Any,
    human_serve: Callable[..., list[Any]] | None, sample: _Sampler, workers: int, t_start: float,
) -> dict[str, Any]:  # fmt: skip
    from rlhfkit import world
    from rlhfkit.data import Response, write_rankings
    from rlhfkit.hacking import scan, word_frequency_shift
    from rlhfkit.models import RewardModel
    from rlhfkit.ppo import PPOConfig
    from rlhfkit.reward_training import RewardConfig, train_reward_model

    stage_seconds: dict[str, float] = {}
    rng = random.Random(seed)
    total = 7

    # 1. the base policy: a small GPT-2 pretrained on the world's text (cached after the first run)
    t0 = _stage(
        say, 1, total, "base policy: building the world's GPT-2 (cached after the first run)"
    )
    full_build = cached_policy_dir(world.BaseBuildSettings(seed=seed))
    if s.build_quick and is_built(full_build):
        # an earlier full demo built the fluent base policy: reuse it, the quick build is worse
        base_dir = full_build
    else:
        base_dir = world.build_base_policy(seed=seed, quick=s.build_quick)
    build_info = world.read_build_info(base_dir)
    stage_seconds["base_policy"] = time.perf_counter() - t0
    say(f"      {base_dir}  ({stage_seconds['base_policy']:.0f} s)")

    # 2. sample K candidates per training prompt
    t0 = _stage(say, 2, total, f"sampling {s.k} candidates for {s.groups} training prompts")
    train_prompts = [world.make_prompt(t) for t in world.TRAIN_TOPICS]
    heldout_prompts = [world.make_prompt(t) for t in world.HELDOUT_TOPICS]
    group_prompts = [train_prompts[i % len(train_prompts)] for i in range(s.groups)]
    rng.shuffle(group_prompts)
    flat_prompts = [p for p in group_prompts for _ in range(s.k)]
    texts, _ = sample(base_dir, flat_prompts, s.response_length, seed, s.temperature)
    candidates = [
        [Response(id=f"r{j}", text=texts[i * s.k + j]) for j in range(s.k)] for i in range(s.groups)
    ]
    # A group with an empty response (the policy emitted EOS at once) cannot be shown to people;
    # such groups are dropped, as an annotation tool would refuse them, and counted.
    keep = [i for i, c in enumerate(candidates) if all(r.text.strip() for r in c)]
    dropped_groups = len(candidates) - len(keep)
    group_prompts = [group_prompts[i] for i in keep]
    candidates = [candidates[i] for i in keep]
    write_jsonl(
        out / "candidates.jsonl",
        (
            {"prompt": p, "responses": [{"id": r.id, "text": r.text} for r in c]}
            for p, c in zip(group_prompts, candidates, strict=True)
        ),
    )
    stage_seconds["sample_candidates"] = time.perf_counter() - t0
    if dropped_groups:
        say(f"      {dropped_groups} groups dropped: a response was empty")

    # 3. rank them: simulated annotators (gold utility + Plackett-Luce noise), or people
    t0 = _stage(
        say,
        3,
        total,
        "ranking: "
        + (
            "people, in the annotation app"
            if human
            else f"{s.annotators_per_prompt} simulated annotators per prompt"
        ),
    )
    if human:
        serve = human_serve or _serve_for_humans
        rankings = serve(out, out / "candidates.jsonl", say)
    else:
        rankings = world.simulate_rankings(
            group_prompts, candidates, annotators_per_prompt=s.annotators_per_prompt, seed=seed
        )
    if not rankings:
        from rlhfkit.errors import RlhfkitError

        raise RlhfkitError("no rankings were collected: nothing to train the reward model on")
    write_rankings(out / "rankings.jsonl", rankings)
    label_accuracy = world.label_accuracy(rankings)
    stage_seconds["rank"] = time.perf_counter() - t0
    say(
        f"      {len(rankings)} rankings; their pairs agree with gold {label_accuracy:.1%} of the time"
    )

    # 4. the reward model: ranking-native Bradley-Terry on the base policy's backbone
    t0 = _stage(say, 4, total, f"training the reward model ({s.rm_epochs} epochs, ranking-native)")
    rm_dir = out / "reward-model"
    train_reward_model(
        RewardConfig(
            model=str(base_dir), data=str(out / "rankings.jsonl"), out=str(rm_dir),
            eval_split=0.05, epochs=s.rm_epochs, batch_size=s.rm_batch_size,
            learning_rate=s.rm_learning_rate, warmup_ratio=0.05, seed=seed, overwrite=True,
            max_length=128, logging_steps=5,
        )
    )  # fmt: skip
    reward_model = RewardModel.from_pretrained(rm_dir)
    # Evaluation against gold on fresh candidate groups that nobody ranked: (a) for the training
    # prompts, (b) for the held-out topics, whose statements (and so whose factual errors) the
    # reward model never saw ranked.
    rm_eval = {
        name: _evaluate_reward_model(
            sample, reward_model, base_dir, prompts, s.eval_groups, s.k, s.response_length,
            seed + offset, s.temperature,
        )
        for name, prompts, offset in (("heldout", train_prompts, 1), ("heldout_topics", heldout_prompts, 3))
    }  # fmt: skip
    rm_accuracy, noise_ceiling = rm_eval["heldout"]
    topics_accuracy, topics_ceiling = rm_eval["heldout_topics"]
    stage_seconds["reward_model"] = time.perf_counter() - t0
    say(
        f"      pairwise accuracy vs gold on unranked groups {rm_accuracy:.3f} (noise ceiling "
        f"{noise_ceiling:.3f}); on held-out topics {topics_accuracy:.3f} (ceiling {topics_ceiling:.3f})"
    )

    # 5. PPO twice from the same base policy, with the world's gold reward logged (never trained on)
    write_jsonl(out / "prompts-train.jsonl", ({"prompt": p} for p in train_prompts))
    configs = {
        run.name: PPOConfig(
            policy=str(base_dir), prompts=str(out / "prompts-train.jsonl"), out=str(out / "ppo" / run.name),
            reward_model=str(rm_dir), total_episodes=s.ppo_episodes, batch_size=s.ppo_batch_size,
            num_mini_batches=s.ppo_mini_batches, response_length=s.response_length,
            temperature=s.temperature, kl_coef=run.kl_coef, learning_rate=s.ppo_learning_rate, seed=seed,
            sample_every=max(1, s.ppo_episodes // s.ppo_batch_size // 6), num_samples=4,
            hacking_check_every=s.hacking_check_every, hacking_num_prompts=64,
            # The promises (README, docs/world.md) were measured with the value head on the
            # policy trunk; "auto" would add the reward model's frozen trunk here.
            critic="head",
            overwrite=True,  # a second demo into the same --out retrains its runs
        )
        for run in s.runs
    }  # fmt: skip
    processes = min(len(configs), workers)
    t0 = _stage(
        say, 5, total,
        f"PPO, {len(s.runs)} runs from the same base policy"
        + (f", side by side in {processes} processes" if processes > 1 else ""),
    )  # fmt: skip
    for run in s.runs:
        say(f"      {run.name}: {run.description}")
    run_seconds = _run_ppo(configs, rm_dir, reward_model, say, console, processes)
    run_dirs = {name: Path(config.out) for name, config in configs.items()}
    stage_seconds.update({f"ppo_{name}": sec for name, sec in run_seconds.items()})
    stage_seconds["ppo"] = time.perf_counter() - t0

    # 6. held-out comparison: base vs each tuned policy on the same held-out prompts
    t0 = _stage(
        say,
        6,
        total,
        f"comparing {s.eval_samples} held-out responses of each policy with the base policy's",
    )
    cmp_prompts = [heldout_prompts[i % len(heldout_prompts)] for i in range(s.eval_samples)]
    policies = {"base": base_dir, **{name: d / "policy" for name, d in run_dirs.items()}}
    outputs: dict[str, dict[str, Any]] = {}
    for name, model_dir in policies.items():
        texts, ended, ids = sample.with_ids(
            model_dir, cmp_prompts, s.response_length, seed + 2, s.temperature
        )
        ev = world.evaluate_texts(cmp_prompts, texts, ended)
        proxy = reward_model.score(cmp_prompts, texts).tolist()
        outputs[name] = {
            "texts": texts,
            "ended": ended,
            "proxy": proxy,
            "gold": ev.gold,
            "eval": ev.summary(),
            # KL from the base policy on these very responses, where proxy and gold are measured
            "kl": _heldout_kl(model_dir, base_dir, cmp_prompts, ids, s.temperature)
            if name != "base"
            else 0.0,
        }
        write_jsonl(
            out / f"heldout-{name}.jsonl",
            ({"prompt": p, "response": t, "proxy_reward": pr, "gold_reward": g, "ended_with_eos": e}
             for p, t, pr, g, e in zip(cmp_prompts, texts, proxy, ev.gold, ended, strict=True)),
        )  # fmt: skip
    base = outputs["base"]
    runs_summary = []
    for run in s.runs:
        tuned = outputs[run.name]
        result = scan(base["texts"], tuned["texts"])
        fantastic = word_frequency_shift(base["texts"], tuned["texts"], "fantastic")
        metrics = [
            json.loads(line)
            for line in (run_dirs[run.name] / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        final_kl = _mean([m["objective/kl"] for m in metrics[-3:]])
        runs_summary.append({
            "name": run.name,
            "beta": run.kl_coef,
            "kl": final_kl,
            "kl_heldout": tuned["kl"],
            "proxy_reward_base": _mean(base["proxy"]),
            "proxy_reward_tuned": _mean(tuned["proxy"]),
            "gold_reward_base": _mean(base["gold"]),
            "gold_reward_tuned": _mean(tuned["gold"]),
            "flagged_tokens": [f.token for f in result.flagged],
            "fantastic": fantastic.to_dict(),
            "valid_rate_base": base["eval"]["valid_rate"],
            "valid_rate_tuned": tuned["eval"]["valid_rate"],
            "empty_rate_base": base["eval"]["empty_rate"],
            "empty_rate_tuned": tuned["eval"]["empty_rate"],
            "scan": result.to_dict(),
        })  # fmt: skip
    stage_seconds["compare"] = time.perf_counter() - t0

    # 7. the report and the summary
    t0 = _stage(say, 7, total, "writing report.html and summary.json")
    summary = {
        "rm_heldout_accuracy": rm_accuracy,
        "rm_noise_ceiling": noise_ceiling,
        "rm_heldout_topics_accuracy": topics_accuracy,
        "rm_heldout_topics_noise_ceiling": topics_ceiling,
        "rm_label_accuracy": label_accuracy,
        "n_rankings": len(rankings),
        "dropped_candidate_groups": dropped_groups,
        "wall_seconds": None,
        "quick": quick,
        "human": human,
        "seed": seed,
        "base_policy": str(base_dir),
        "base_policy_build": build_info.get("evaluation", build_info),
        "runs": runs_summary,
        "stage_seconds": stage_seconds,
        "settings": asdict(s),
    }
    from rlhfkit.demo_report import render_demo_report

    summary["wall_seconds"] = time.perf_counter() - t_start  # the report's subtitle shows it
    render_demo_report(out, summary, run_dirs, rm_dir, outputs, cmp_prompts)
    stage_seconds["report"] = time.perf_counter() - t0
    summary["wall_seconds"] = time.perf_counter() - t_start
    write_json(out / "summary.json", summary)
    return summary


def _default_processes() -> int:
    """One worker process per core torch may use (``OMP_NUM_THREADS=1``, for a busy machine, keeps
    all the work in this process)."""
    import os

    import torch

    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    return max(1, min(torch.get_num_threads(), cores))


def _run_ppo(
    configs: dict[str, Any], rm_dir: Path, reward_model: Any, say: Say, console: Any, processes: int
) -> dict[str, float]:
    """Train every PPO run; returns each run's seconds. With ``processes`` > 1 the runs train side
    by side in spawned processes (torch's threads split between them), one progress bar each, fed
    from the runs' own metrics.jsonl; their warnings (the live hacking monitor's) are shown here."""
    from rlhfkit.ppo import PPOTrainer
    from rlhfkit.world import gold_reward_fn

    seconds: dict[str, float] = {}
    if processes <= 1:
        for name, config in configs.items():
            t0 = time.perf_counter()
            with _warnings_to(say):
                PPOTrainer(config, reward_model=reward_model, gold_reward_fn=gold_reward_fn).train()
            seconds[name] = time.perf_counter() - t0
        return seconds

    import multiprocessing as mp
    import queue as queue_module

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rlhfkit.errors import RlhfkitError

    threads = max(1, torch.get_num_threads() // processes)
    ctx = mp.get_context("spawn")  # fork would copy torch's thread pool state: not safe
    messages = ctx.Queue()
    waiting = list(configs)
    running: dict[str, Any] = {}
    progress = Progress(
        TextColumn("      {task.description:>14}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
    )  # fmt: skip
    tasks = {
        name: progress.add_task(name, total=config.num_updates, info="")
        for name, config in configs.items()
    }
    try:
        with progress:
            while waiting or running:
                while waiting and len(running) < processes:
                    name = waiting.pop(0)
                    config = replace(configs[name], progress=False)
                    # the trainer would start a fresh log too; removing it first keeps the bar
                    # from showing an earlier demo's updates
                    (Path(config.out) / "metrics.jsonl").unlink(missing_ok=True)
                    proc = ctx.Process(
                        target=_ppo_process, args=(name, config, str(rm_dir), threads, messages),
                        daemon=True,
                    )  # fmt: skip
                    proc.start()
                    running[name] = proc
                try:
                    kind, name, value = messages.get(timeout=0.5)
                except queue_module.Empty:
                    kind = name = value = None
                if kind == "warning":
                    progress.console.print(f"      [yellow]{name}: {escape(value)}[/]")
                elif kind == "done":
                    seconds[name] = value
                    running.pop(name).join()
                    progress.update(tasks[name], completed=configs[name].num_updates)
                elif kind == "error":
                    raise RlhfkitError(f"PPO run {name!r} failed: {value}")
                for run_name, proc in running.items():
                    progress.update(tasks[run_name], **_progress_from_log(configs[run_name].out))
                    if not proc.is_alive() and messages.empty():
                        raise RlhfkitError(
                            f"PPO run {run_name!r}: its process ended without a result (exit "
                            f"code {proc.exitcode}: out of memory? or, from a script of yours, "
                            "a run_demo call not under `if __name__ == '__main__':`, which "
                            "spawned processes re-run; DemoSettings.processes=1 avoids processes)"
                        )
    finally:
        for proc in running.values():
            proc.terminate()
            proc.join()
    return seconds


def _progress_from_log(run_dir: str) -> dict[str, Any]:
    """Updates done, reward and KL so far, read from a run's metrics.jsonl (as it is written)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    done = 0
    last: dict[str, Any] = {}
    for line in lines:
        try:
            last = json.loads(line)
        except json.JSONDecodeError:  # the line being written
            continue
        done += 1
    if not done:
        return {}
    return {
        "completed": done,
        "info": f"reward {last.get('objective/scores', float('nan')):.3f}  "
        f"kl {last.get('objective/kl', float('nan')):.3f}",
    }


def _ppo_process(name: str, config: Any, rm_dir: str, threads: int, messages: Any) -> None:
    """One PPO run in a process of its own; its warnings and its end go to ``messages``."""
    import traceback

    try:
        _init_worker(threads)
        from rlhfkit.models import RewardModel
        from rlhfkit.ppo import PPOTrainer
        from rlhfkit.world import gold_reward_fn

        def show(message, category, filename, lineno, file=None, line=None):
            messages.put(("warning", name, str(message)))

        warnings.showwarning = show
        t0 = time.perf_counter()
        reward_model = RewardModel.from_pretrained(rm_dir)
        PPOTrainer(config, reward_model=reward_model, gold_reward_fn=gold_reward_fn).train()
        messages.put(("done", name, time.perf_counter() - t0))
    except BaseException as e:  # the parent shows it and stops the other runs
        from rlhfkit.errors import RlhfkitError

        detail = str(e) if isinstance(e, RlhfkitError) else traceback.format_exc()
        messages.put(("error", name, detail))


def _serve_for_humans(out: Path, candidates_path: Path, say: Say) -> list[Any]:
    """Serve the candidates in the annotation app and wait until people have ranked them all
    (Ctrl-C stops waiting and keeps what was ranked so far)."""
    from rlhfkit.annotate.serve_local import collect_rankings

    return collect_rankings(out / "annotations.db", candidates_path, say)


def format_summary(summary: dict[str, Any]) -> str:
    """The short console summary printed at the end of the demo."""
    lines = [
        f"reward model: pairwise accuracy vs gold on unranked answers {summary['rm_heldout_accuracy']:.3f} "
        f"(noise ceiling {summary['rm_noise_ceiling']:.3f}), on held-out topics "
        f"{summary.get('rm_heldout_topics_accuracy', float('nan')):.3f}",
    ]
    for r in summary["runs"]:
        flagged = ", ".join(r["flagged_tokens"][:4]) or "nothing"
        lines.append(
            f"{r['name']:>14} (β={r['beta']:g}): KL {r['kl']:.2f} (held-out {r['kl_heldout']:.2f}) "
            f"| proxy {r['proxy_reward_base']:+.2f} → "
            f"{r['proxy_reward_tuned']:+.2f} | gold {r['gold_reward_base']:+.2f} → {r['gold_reward_tuned']:+.2f} "
            f"| flagged: {flagged}"
        )
        empty, empty_base = r.get("empty_rate_tuned") or 0.0, r.get("empty_rate_base") or 0.0
        if empty >= 0.5:
            # e.g. --quick on its barely fluent base policy: an empty answer (gold −2) beats most
            # of what that policy writes, and the reward model never saw one ranked
            lines.append(
                f"{'':>14}  {empty:.0%} of its held-out answers are empty (base policy: "
                f"{empty_base:.0%}): it learned to say nothing"
            )
    minutes = summary["wall_seconds"] / 60
    lines.append(f"wall time {summary['wall_seconds']:.0f} s ({minutes:.1f} min)")
    return "\n".join(lines)
