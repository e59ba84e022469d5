"""``rlhfkit best-of-n``: keep the best of n sampled responses per prompt by a reward model."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Annotated, Literal

import tyro

from rlhfkit.cli._common import check_sampling, parse_config


@dataclasses.dataclass
class BestOfNConfig:
    """Sample n responses per prompt from a policy and keep the one the reward model scores
    highest (no training); writes {"prompt", "response", "score", "index", "scores"} per prompt."""

    policy: str
    """Causal LM: a save_pretrained directory or a Hugging Face model name."""
    reward_model: str
    """Reward model directory (rlhfkit train-rm), or an ensemble (train-rm --ensemble)."""
    prompts: str
    """Prompts: JSONL/JSON/Parquet records with a 'prompt' field, or a .txt file, one per line."""
    out: str
    """Output JSONL (written atomically)."""
    n: Annotated[int, tyro.conf.arg(aliases=("-n",))] = 4
    """Responses sampled per prompt."""
    max_new_tokens: int = 64
    """Longest response, in tokens."""
    temperature: float = 1.0
    """Sampling temperature (> 0)."""
    top_p: float = 1.0
    """Nucleus sampling (1.0: off)."""
    seed: int = 0
    """Random seed (same seed, same samples)."""
    batch_size: int = 8
    """Prompts per generate call (each yields n sequences)."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """The policy's chat template for conversational prompts (docs/models.md)."""
    ensemble_objective: Literal["mean", "worst", "uwo"] = "mean"
    """With an ensemble: how its members' scores combine (Coste et al. 2023)."""
    uwo_lambda: float = 1.0
    """λ of --ensemble-objective uwo (mean − λ·variance)."""
    gold_reward_fn: str | None = None
    """A true reward FILE.py:NAME, only to report the chosen responses' gold reward."""

    def __post_init__(self) -> None:
        check_sampling(
            "-n", self.n, self.max_new_tokens, self.temperature, self.top_p, self.batch_size
        )


def main(argv: list[str]) -> int:
    cfg = parse_config(
        BestOfNConfig, argv, prog="rlhfkit best-of-n", description=BestOfNConfig.__doc__
    )
    from rlhfkit.collect.best_of_n import best_of_n
    from rlhfkit.data import read_prompt_inputs
    from rlhfkit.hacking.overoptimization import kl_best_of_n
    from rlhfkit.loading import check_model_source
    from rlhfkit.ppo.rewards import load_reward_fn
    from rlhfkit.reward.ensemble import load_reward
    from rlhfkit.runtime.io import write_jsonl
    from rlhfkit.runtime.logs import get_logger
    from rlhfkit.runtime.progress import track

    check_model_source(cfg.policy, "--policy")
    check_model_source(cfg.reward_model, "--reward-model", allow_ensemble=True)
    prompts = read_prompt_inputs(cfg.prompts)
    gold = load_reward_fn(cfg.gold_reward_fn) if cfg.gold_reward_fn else None
    reward = load_reward(cfg.reward_model, cfg.ensemble_objective, cfg.uwo_lambda)
    rows: list[dict] = []

    def keep(it):
        for row in it:
            rows.append(row)
            yield row

    write_jsonl(cfg.out, track(keep(best_of_n(
        cfg.policy, reward, prompts, cfg.n, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed, batch_size=cfg.batch_size,
        chat_template=cfg.chat_template, gold_fn=gold,
    )), f"best-of-{cfg.n}", len(prompts)))  # fmt: skip
    chosen = statistics.fmean(r["score"] for r in rows)
    first = statistics.fmean(r["scores"][0] for r in rows)
    line = (f"best-of-{cfg.n} on {len(rows)} prompts: reward {first:+.3f} (one sample) -> "
            f"{chosen:+.3f}; KL from the policy {kl_best_of_n(cfg.n):.3f} nats")  # fmt: skip
    if gold is not None:
        line += f"; gold of the chosen {statistics.fmean(r['gold'] for r in rows):+.3f}"
    get_logger("best-of-n").info(line)
    print(f"wrote {len(rows)} responses to {cfg.out}")
    return 0
