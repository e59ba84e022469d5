"""What a PPO update logs (metrics.jsonl, the trackers, samples.jsonl): the time each step took,
the statistics of the batch (means over every process), and a few sampled responses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rlhfkit.ops import explained_variance
from rlhfkit.ppo.rollout import Rollout
from rlhfkit.ppo.update import Batch


class Stopwatch:
    """The seconds of an update's steps, as ``time/*`` metrics (``time/total`` since created)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.times[f"time/{name}"] = time.perf_counter() - t0

    def finish(self, episodes: int | None = None) -> dict[str, float]:
        """Every step's time and the total; with ``episodes``, also episodes per second."""
        times = {**self.times, "time/total": time.perf_counter() - self.start}
        if episodes is not None:
            times["time/episodes_per_second"] = episodes / times["time/total"]
        return times


def update_metrics(
    batch: Batch, kl: torch.Tensor, non_score_reward: torch.Tensor,
    score_parts: dict[str, torch.Tensor], train_stats: dict[str, torch.Tensor],
    return_std: torch.Tensor, *, beta: float, eos_token_id: int | None, accelerator: Any,
) -> dict[str, Any]:  # fmt: skip
    """One update's statistics, each the mean over every process's rows (``val/num_eos_tokens``
    the sum): KL (``kl`` (B, R), per token, 0 off the mask) and entropy per response, the scores
    and their parts, the critic's fit, the responses' lengths, and the PPO epochs' ``train_stats``.
    ``objective/rlhf_reward`` is scores − β·KL: ``non_score_reward`` (B,) is −β·KL per response,
    with the estimator the reward used."""
    roll, mask, device = batch.roll, batch.roll.response_mask, accelerator.device  # mask: (B, R)
    means = {
        "objective/kl": kl.sum(1).mean(),
        "objective/entropy": (-batch.b_logprobs * mask).sum(1).mean(),
        "objective/non_score_reward": non_score_reward.mean(),
        "objective/scores": batch.b_scores.mean(),
        "val/explained_variance": explained_variance(batch.b_values, batch.b_returns, mask),
        "val/return_std": return_std,
        "response/length_mean": mask.sum(1).mean(),
        "response/no_eos_frac": (~roll.has_stop).float().mean(),
        **{k: v.mean() for k, v in score_parts.items()},
        **train_stats,
    }
    keys = list(means)
    reduced = accelerator.reduce(torch.stack([means[k].float().to(device) for k in keys]), "mean")
    metrics: dict[str, Any] = {k: float(v) for k, v in zip(keys, reduced.tolist(), strict=True)}
    n_eos = (roll.responses == eos_token_id).logical_and(mask.bool()).sum()
    metrics["val/num_eos_tokens"] = int(accelerator.reduce(n_eos.to(device), "sum").item())
    metrics["objective/kl_coef"] = beta
    metrics["objective/rlhf_reward"] = (
        metrics["objective/scores"] + metrics["objective/non_score_reward"]
    )
    return metrics


def write_samples(
    path: Path, step: int, roll: Rollout, scores: torch.Tensor, kl: torch.Tensor, n: int
) -> None:
    """Append the first ``n`` responses of the batch, with their score and KL (``kl`` (B, R) per
    token), to ``path`` (samples.jsonl)."""
    seq_kl = kl.sum(1)  # (B,)
    with open(path, "a", encoding="utf-8") as f:
        for i in range(min(n, len(roll.texts))):
            f.write(json.dumps({
                "step": step, "prompt": roll.prompts[i], "response": roll.texts[i],
                "score": float(scores[i]), "kl": float(seq_kl[i]),
            }, ensure_ascii=False) + "\n")  # fmt: skip
