"""``rlhfkit ppo``: tune a policy with PPO against a reward model and/or a reward function."""

from __future__ import annotations

from rlhfkit.cli._common import parse_config
from rlhfkit.runtime.logs import get_logger


def main(argv: list[str]) -> int:
    from rlhfkit.ppo import PPOConfig, PPOTrainer

    config = parse_config(
        PPOConfig,
        argv,
        prog="rlhfkit ppo",
        description=(
            "Tune a causal LM with PPO and a KL penalty against a reward model (--reward-model) "
            "and/or a Python reward function (--reward-fn FILE.py:NAME). Writes OUT/policy/, "
            "OUT/checkpoints/step-N/, OUT/metrics.jsonl and OUT/samples.jsonl."
        ),
    )
    trainer = PPOTrainer(config)
    result = trainer.train()
    if not trainer.is_main:
        return 0
    log = get_logger("ppo")
    if result["stopped"] == "hacking":
        log.warning(
            f"stopped at update {result['step']} by the hacking monitor "
            f"(--stop-on-hacking); see {config.out}/stopped.json"
        )
        return 3
    log.info(
        f"{result['step']} updates, {result['episode']} episodes; "
        f"final score {result.get('objective/scores', float('nan')):.4f}, "
        f"KL {result.get('objective/kl', float('nan')):.4f}; policy saved to {config.out}/policy"
    )
    return 0
