"""``rlhfkit train-rm``: train a reward model on rankings or pairs (see docs/reward-model.md)."""

from __future__ import annotations

import json

from rlhfkit.cli._common import parse_config


def main(argv: list[str]) -> int:
    from rlhfkit.reward import RewardConfig, train_reward_model

    config = parse_config(
        RewardConfig,
        argv,
        prog="rlhfkit train-rm",
        description=(
            "Train a reward model (a one-output head on any Hugging Face backbone) on rankings of "
            "K responses per prompt, one forward per response, Bradley-Terry loss over every "
            "ordered pair. OUT is loadable by AutoModelForSequenceClassification; OUT/eval.json "
            "holds the held-out accuracy, OUT/metrics.jsonl the rm/* training metrics."
        ),
    )
    if config.ensemble > 1:
        from rlhfkit.reward.ensemble import train_ensemble

        results = train_ensemble(config)
        keys: tuple[str, ...] = (
            "member_accuracy", "accuracy_mean", "accuracy_worst", "accuracy_uwo",
            "disagreement_std", "disagreement_pairs",
        )  # fmt: skip
    else:
        results = train_reward_model(config)
        keys = ("accuracy", "margin", "loss", "top1_accuracy", "n_rankings", "n_pairs")
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one summary line, not one per process
        return 0
    print(json.dumps({k: results.get(k) for k in keys}))
    return 0
