"""Options renamed so that both trainers share one naming scheme, TRL's where TRL has a name.

The old names keep working for one release: on the command line and in YAML files they are read as
the new ones with a deprecation line on stderr (:func:`rlhfkit.cli._common.parse_config`), and
checkpoints written under the old names resume (:func:`upgrade_settings`).
"""

from __future__ import annotations

from typing import Any

# old option -> new option
RENAMED_OPTIONS: dict[str, str] = {
    "lr_schedule": "lr_scheduler_type",  # ppo
    "lr_scheduler": "lr_scheduler_type",  # train-rm
    "adam_eps": "adam_epsilon",
    "ppo_epochs": "num_ppo_epochs",
    "max_bad_updates": "max_bad_steps",  # ppo (train-rm already said steps)
    "keep_checkpoints": "save_total_limit",
}


def renamed_value(old: str, value: Any) -> Any:
    """An old option's value in the new option's terms: ``--keep-checkpoints 0`` kept them all,
    which ``--save-total-limit`` says with ``None``."""
    if old == "keep_checkpoints" and str(value) == "0":
        return None
    return value


def upgrade_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings recorded under old names (a checkpoint's), under the new ones."""
    return {
        RENAMED_OPTIONS.get(k, k): renamed_value(k, v) if k in RENAMED_OPTIONS else v
        for k, v in settings.items()
    }
