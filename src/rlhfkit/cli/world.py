"""``rlhfkit world``: the synthetic demo world — build its base policy, measure a policy, write its
prompts, rank candidates with simulated annotators, show sample responses.

    rlhfkit world build [--out DIR] [--seed N] [--steps N] [--quick] [--no-cache]
    rlhfkit world eval --model DIR [--n N] [--split all|train|heldout] [--json]
    rlhfkit world prompts --out F.jsonl [--split train|heldout|all] [--repeat N]
    rlhfkit world rank --candidates F.jsonl --out rankings.jsonl [--annotators-per-prompt N]
    rlhfkit world sample [--n N] [--topic T]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

from rlhfkit.cli._common import eprint, parse_config
from rlhfkit.errors import ConfigError, DataError

Split = Literal["all", "train", "heldout"]


@dataclasses.dataclass
class BuildConfig:
    """Build the world's base policy (a small GPT-2 pretrained on world text), or reuse the cache."""

    out: Path | None = None
    """copy the model directory here (default: print the cache directory and leave it there)"""
    seed: int = 0
    """seed for the training data and the initial weights"""
    steps: int | None = None
    """optimizer steps of batch 32 (default 900, or 250 with --quick)"""
    quick: bool = False
    """a smaller model trained briefly (seconds): for tests and a quick look"""
    cache: bool = True
    """reuse the cached model; --no-cache builds anew and does not store it (needs --out)"""
    eval_samples: int = 200
    """samples drawn after training to measure the policy (0 to skip)"""
    json: bool = False
    """print the build record as JSON instead of a summary"""


@dataclasses.dataclass
class EvalConfig:
    """Sample from a policy and measure its text against the world (valid, EOS, gold, "fantastic")."""

    model: Path
    """model directory (e.g. from rlhfkit world build, or a PPO run's policy/)"""
    n: int = 200
    """number of samples"""
    split: Split = "all"
    """which topics' prompts to sample"""
    seed: int = 0
    """sampling seed"""
    max_new_tokens: int = 128
    """longest response"""
    temperature: float = 0.7
    """sampling temperature (the demo samples at 0.7)"""
    show: int = 3
    """print this many sample responses"""
    json: bool = False
    """print the measurements as JSON"""


@dataclasses.dataclass
class PromptsConfig:
    """Write the world's prompts as JSONL ({"prompt": ...} per line) for generate and ppo."""

    out: Path
    """output JSONL file"""
    split: Split = "train"
    """train (reward model and PPO), heldout (evaluation) or all"""
    repeat: int = 1
    """write each prompt this many times"""


@dataclasses.dataclass
class RankConfig:
    """Rank candidate responses with simulated annotators (gold utility + Plackett-Luce noise)."""

    candidates: Path
    """candidates JSONL from rlhfkit generate: {"prompt", "responses": [{"id", "text"}]} per line"""
    out: Path
    """output rankings JSONL (the native format, one record per annotator and prompt)"""
    annotators_per_prompt: int = 3
    """how many simulated people rank each prompt's candidates (from a pool of 5)"""
    seed: int = 0
    """seed for annotator choice and noise"""


@dataclasses.dataclass
class SampleConfig:
    """Print responses from the base policy's training distribution, with their gold utility."""

    n: int = 5
    """number of responses"""
    topic: str | None = None
    """topic (default: random topics)"""
    seed: int = 0
    """sampling seed"""


_SUBCOMMANDS = {
    "build": BuildConfig,
    "eval": EvalConfig,
    "prompts": PromptsConfig,
    "rank": RankConfig,
    "sample": SampleConfig,
}


def _usage() -> str:
    lines = ["usage: rlhfkit world SUBCOMMAND [options]", "", "subcommands:"]
    for name, cls in _SUBCOMMANDS.items():
        lines.append(f"  {name.ljust(8)} {(cls.__doc__ or '').strip()}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in _SUBCOMMANDS:
        eprint(f"rlhfkit world: unknown subcommand {name!r}\n\n{_usage()}")
        return 2
    cls = _SUBCOMMANDS[name]
    cfg = parse_config(cls, rest, prog=f"rlhfkit world {name}", description=cls.__doc__)
    return {"build": _build, "eval": _eval, "prompts": _prompts, "rank": _rank, "sample": _sample}[
        name
    ](cfg)


def _topics(split: str) -> tuple[str, ...]:
    from rlhfkit.world.content import HELDOUT_TOPICS, TOPICS, TRAIN_TOPICS

    return {"all": tuple(TOPICS), "train": TRAIN_TOPICS, "heldout": HELDOUT_TOPICS}[split]


def _print_evaluation(summary: dict, file=sys.stdout) -> None:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    print(f"  samples                      {summary['n']}", file=file)
    print(f"  valid world text             {pct(summary['valid_rate'])}", file=file)
    print(f"  ended with EOS               {pct(summary['eos_rate'])}", file=file)
    print(f"  on topic                     {pct(summary['on_topic_rate'])}", file=file)
    print(f"  mean gold utility            {summary['gold_mean']:.3f}", file=file)
    print(f"  'fantastic' opener           {pct(summary['fantastic_rate'])}", file=file)
    print(
        f"    on analogy + no error      {pct(summary['fantastic_rate_analogy_no_error'])}"
        f"  ({summary['n_analogy_no_error']} responses)",
        file=file,
    )
    print(f"    on the others              {pct(summary['fantastic_rate_other'])}", file=file)


def _build(cfg: BuildConfig) -> int:
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from rlhfkit.world.policy import (
        BaseBuildSettings,
        build_base_policy,
        cached_policy_dir,
        is_built,
        read_build_info,
    )

    if not cfg.cache and cfg.out is None:
        raise ConfigError("--no-cache needs --out DIR (there is nowhere else to put the model)")
    if cfg.steps is not None and cfg.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {cfg.steps}")
    settings = BaseBuildSettings.quick(cfg.seed) if cfg.quick else BaseBuildSettings(seed=cfg.seed)
    if cfg.steps is not None:
        settings = dataclasses.replace(settings, steps=cfg.steps)
    cached = cfg.cache and is_built(cached_policy_dir(settings))
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]pretraining base policy"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps  loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
        transient=True,
    ) as bar:
        task = bar.add_task("train", total=settings.steps, loss="-")
        path = build_base_policy(
            cfg.out,
            settings=settings,
            use_cache=cfg.cache,
            eval_samples=cfg.eval_samples,
            progress=lambda step, total, loss: bar.update(task, completed=step, loss=f"{loss:.3f}"),
        )
    info = read_build_info(path)
    if cfg.json:
        print(json.dumps({"path": str(path), "cached": cached, **info}, indent=2))
        return 0
    how = "taken from the cache" if cached else f"built in {time.perf_counter() - t0:.1f} s"
    print(f"base policy: {path} ({how})")
    s = info["settings"]
    print(
        f"  GPT-2 {s['n_layer']} layers x {s['n_embd']} dims, {info['n_params']:,} parameters, "
        f"vocabulary {info['vocab_size']}; {s['steps']} steps of batch {s['batch_size']} "
        f"in {info['train_seconds']:.1f} s, final loss {info['final_loss']:.3f}"
    )
    if info.get("evaluation"):
        _print_evaluation(info["evaluation"])
    return 0


def _eval(cfg: EvalConfig) -> int:
    from rlhfkit.world.policy import evaluate_policy

    if not (cfg.model / "config.json").is_file():
        raise DataError("not a model directory (no config.json)", cfg.model)
    if cfg.n < 1:
        raise ConfigError(f"--n must be >= 1, got {cfg.n}")
    if cfg.temperature <= 0:
        raise ConfigError(f"--temperature must be > 0, got {cfg.temperature}")
    ev = evaluate_policy(
        cfg.model,
        n=cfg.n,
        seed=cfg.seed,
        topics=_topics(cfg.split),
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
    )
    summary = ev.summary()
    if cfg.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"policy: {cfg.model} ({cfg.split} topics)")
    _print_evaluation(summary)
    for prompt, response, gold in list(zip(ev.prompts, ev.responses, ev.gold, strict=True))[
        : cfg.show
    ]:
        print(f"\n  {prompt}\n  -> {response}\n     gold {gold:+.2f}")
    return 0


def _prompts(cfg: PromptsConfig) -> int:
    from rlhfkit.runtime.io import write_jsonl
    from rlhfkit.world.gold import make_prompt

    if cfg.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {cfg.repeat}")
    prompts = [make_prompt(t) for t in _topics(cfg.split)] * cfg.repeat
    n = write_jsonl(cfg.out, ({"prompt": p} for p in prompts))
    print(f"wrote {n} prompts ({cfg.split} topics) to {cfg.out}")
    return 0


def read_candidates(path: Path) -> list[tuple[str | list, list]]:
    """``(prompt, [Response, ...])`` per line of a candidates JSONL (``rlhfkit generate`` output),
    each prompt one of the world's; a conversational prompt stays a list of messages."""
    from rlhfkit.data.candidates import read_candidates as read
    from rlhfkit.world.gold import topic_of_prompt

    out = []
    for group in read(path, min_responses=2):
        try:
            topic_of_prompt(group.prompt_text)
        except DataError as e:
            raise DataError(e.message, path, group.line) from None
        out.append((group.prompt, group.responses))
    return out


def _rank(cfg: RankConfig) -> int:
    from rlhfkit.data import write_rankings
    from rlhfkit.world.annotators import (
        DEFAULT_ANNOTATORS,
        label_accuracy,
        noise_ceiling,
        simulate_rankings,
    )
    from rlhfkit.world.gold import gold_utility

    if not 1 <= cfg.annotators_per_prompt <= len(DEFAULT_ANNOTATORS):
        raise ConfigError(
            f"--annotators-per-prompt must be in 1..{len(DEFAULT_ANNOTATORS)}, got {cfg.annotators_per_prompt}"
        )
    from rlhfkit.chat import as_text

    groups = read_candidates(cfg.candidates)
    inputs = [p for p, _ in groups]
    prompts = [as_text(p) for p in inputs]
    candidates = [rs for _, rs in groups]
    rankings = simulate_rankings(prompts, candidates, cfg.annotators_per_prompt, seed=cfg.seed)
    conversation = {as_text(p): p for p in inputs if isinstance(p, list)}
    for r in rankings:  # a conversation stays one, for a reward model's chat template
        if r.prompt in conversation:
            r.meta["prompt_messages"] = conversation[r.prompt]
    groups = [(as_text(p), rs) for p, rs in groups]
    n = write_rankings(cfg.out, rankings)
    print(f"wrote {n} rankings of {len(groups)} prompts to {cfg.out}")
    utilities = [[gold_utility(p, r.text) for r in rs] for p, rs in groups]
    try:
        print(f"  labels agree with gold on {100 * label_accuracy(rankings):.1f}% of pairs")
        print(f"  noise ceiling {100 * noise_ceiling(utilities):.1f}%")
    except ValueError as e:
        print(f"  ({e})")
    return 0


def _sample(cfg: SampleConfig) -> int:
    import random

    from rlhfkit.world.content import TOPICS
    from rlhfkit.world.gold import gold_utility, make_prompt
    from rlhfkit.world.sampling import sample_response

    if cfg.topic is not None and cfg.topic not in TOPICS:
        raise ConfigError(f"unknown topic {cfg.topic!r}; topics: {', '.join(TOPICS)}")
    rng = random.Random(cfg.seed)
    for _ in range(cfg.n):
        topic = cfg.topic or rng.choice(list(TOPICS))
        prompt = make_prompt(topic)
        response = sample_response(topic, rng)
        print(f"{prompt}\n-> {response}\n   gold {gold_utility(prompt, response):+.2f}\n")
    return 0
