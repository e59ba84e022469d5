"""The card of a policy tuned with PPO (``ppo``'s OUT/policy): its metrics from the run's
``metrics.jsonl`` and the hacking monitor's findings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.cards.common import (
    _card,
    _number,
    _read_metrics,
    _table,
    _versions,
    command_line,
    hub_id,
)

# The metrics the card shows, first and last update, in this order (each when the run logged it).
_METRIC_ROWS = (
    ("objective/scores", "proxy reward (the reward the policy was trained on)"),
    ("objective/gold_scores", "gold reward (logged, never trained on)"),
    ("objective/kl", "KL(policy ‖ reference) per response"),
    ("objective/kl_coef", "β"),
    ("response/length_mean", "response length (tokens)"),
    ("reward/ensemble_std", "ensemble disagreement (std of the members' scores)"),
)


def policy_card(
    config: Any, n_prompts: int | None = None, hacking_warning: str | None = None
) -> Any:
    """The card of the policy a PPO run with ``config`` (``PPOConfig``) saved: its metrics come
    from ``OUT/metrics.jsonl``; ``hacking_warning`` is the monitor's warning at its last check."""
    from rlhfkit import __version__

    out = Path(config.out)
    # The updates' records (a line without the KL is no update: a header, an evaluation).
    records = [r for r in _read_metrics(out / "metrics.jsonl") if "objective/kl" in r]
    use = f"""```python
from transformers import pipeline

generate = pipeline("text-generation", model="{out.resolve().name}/policy")  # or its Hub repo
print(generate("Explain rainbows in simple terms.", max_new_tokens={config.response_length}))
```"""
    return _card(
        {
            "library_name": "rlhfkit",
            "base_model": hub_id(config.policy),
            "datasets": [d for d in (hub_id(config.prompts, "datasets"),) if d],
            "pipeline_tag": "text-generation",
            "tags": ["rlhfkit", "rlhf", "ppo"] + (["lora"] if config.lora_r else []),
        },
        f"Policy {out.resolve().name}",
        [
            ("Training command", f"```bash\n{command_line('rlhfkit ppo', config)}\n```"),
            ("Data", _data_section(config, n_prompts, records[-1] if records else {})),
            ("Metrics", _metrics_section(records)),
            ("Reward hacking", _hacking_section(config, records, hacking_warning)),
            ("Use", use),
            ("Framework versions", _versions()),
        ],
        f"`{config.policy}` tuned with PPO and a KL penalty (reward − β·KL(policy ‖ reference)) "
        f"by [rlhfkit](https://pypi.org/project/rlhfkit/) {__version__}. A proxy reward that rose "
        "is not proof of a better model: read the KL, the gold reward where there is one, and the "
        "hacking monitor's findings below.",
    )


def _data_section(config: Any, n_prompts: int | None, last: dict[str, Any]) -> str:
    """The prompts, the reward (and whether it is an ensemble) and how much the run trained."""
    from rlhfkit.reward.ensemble import is_ensemble

    rewards = (
        " and ".join(f"`{x}`" for x in (config.reward_model, config.reward_fn) if x)
        or "a reward given in Python"
    )
    if config.reward_model and is_ensemble(config.reward_model):
        rewards += f" (an ensemble; objective `{config.ensemble_objective}`)"
    return _table(
        [
            ("prompts", f"`{config.prompts}`" + (f" ({n_prompts} prompts)" if n_prompts else "")),
            ("reward", rewards),
            ("episodes × updates", f"{last.get('episode', '–')} episodes in {last.get('step', '–')} updates of {config.batch_size}"),
        ],
        ("", ""),
    )  # fmt: skip


def _metrics_section(records: list[dict[str, Any]]) -> str:
    """The logged metrics at the first and the last update."""
    first, last = (records[0], records[-1]) if records else ({}, {})
    rows = [
        (label, _number(first.get(key)), _number(last.get(key)))
        for key, label in _METRIC_ROWS
        if key in last
    ]
    if not rows:
        return "No update was logged."
    return _table(rows, ("metric", "first update", f"last update ({last.get('step')})"))


def _hacking_section(
    config: Any, records: list[dict[str, Any]], hacking_warning: str | None
) -> str:
    """What the live hacking monitor found: its checks, the updates it flagged, and its signals
    and verdict at the last check."""
    from rlhfkit.hacking.verdict import LABELS

    checks = [r for r in records if "hacking/suspected" in r]
    if not config.hacking_check_every:
        return (
            "The live hacking monitor was off (`--hacking-check-every 0`). Compare this policy's "
            "outputs with the base policy's with `rlhfkit detect`."
        )
    if not checks:
        return "The live hacking monitor made no check (the run was shorter than one interval)."
    flagged = [r["step"] for r in checks if r["hacking/suspected"] > 0]
    return (
        f"The live hacking monitor compared the policy's answers with the base policy's every "
        f"{config.hacking_check_every} updates: {len(checks)} check(s), "
        f"{len(flagged)} flagged" + (f" (updates {', '.join(map(str, flagged))})" if flagged else "")
        + f". At the last check (update {checks[-1]['step']}): "
        + (f"**{hacking_warning}**" if hacking_warning else "nothing flagged")
        + (f"; verdict **{LABELS[int(checks[-1]['hacking/verdict'])]}**" if "hacking/verdict" in checks[-1] else "")
        + ".\n\n"
        + _table(
            [(k.split("/", 1)[1], _number(v)) for k, v in checks[-1].items() if k.startswith("hacking/") and k != "hacking/verdict"],
            ("signal at the last check", "value"),
        )
        + "\n\nThe signals are explained in rlhfkit's docs/hacking.md."
    )  # fmt: skip
