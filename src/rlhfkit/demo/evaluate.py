"""The demo's reward model measured against gold, on candidate groups nobody ranked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfkit.demo.sampling import Sampler


def pairwise_accuracy_vs_gold(scores: list[list[float]], gold: list[list[float]]) -> float:
    """Share of pairs (strictly ordered by gold) that the reward model orders the same way."""
    from rlhfkit.data.pairs import pair_agreement
    from rlhfkit.world.annotators import GOLD_TIE_TOLERANCE

    counts = [pair_agreement(s, g, GOLD_TIE_TOLERANCE) for s, g in zip(scores, gold, strict=True)]
    right, total = sum(a for a, _ in counts), sum(n for _, n in counts)
    return right / total if total else float("nan")


def evaluate_reward_model(
    sample: Sampler,
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
    return pairwise_accuracy_vs_gold(scores, gold), world.noise_ceiling(gold)
