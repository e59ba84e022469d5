"""rlhfkit: the whole RLHF pipeline — collect rankings, train a reward model with the
Bradley-Terry loss, tune a policy with PPO under a KL penalty, and detect reward hacking.

The names of the Python API below import from ``rlhfkit`` directly; each is loaded on first use,
so ``import rlhfkit`` (and the ``rlhfkit`` command's ``--help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_API = {
    "RewardConfig": "rlhfkit.reward",
    "train_reward_model": "rlhfkit.reward",
    "RewardModel": "rlhfkit.reward",
    "PPOConfig": "rlhfkit.ppo",
    "PPOTrainer": "rlhfkit.ppo",
    "generate_candidates": "rlhfkit.collect.generate",
    "read_preferences": "rlhfkit.data",
    "write_rankings": "rlhfkit.data",
    "Ranking": "rlhfkit.data",
    "Response": "rlhfkit.data",
    "scan": "rlhfkit.hacking",
    "word_frequency_shift": "rlhfkit.hacking",
    "HackingMonitor": "rlhfkit.hacking",
}

__all__ = [
    "HackingMonitor",
    "PPOConfig",
    "PPOTrainer",
    "Ranking",
    "Response",
    "RewardConfig",
    "RewardModel",
    "__version__",
    "generate_candidates",
    "read_preferences",
    "scan",
    "train_reward_model",
    "word_frequency_shift",
    "write_rankings",
]
assert sorted(__all__) == sorted(["__version__", *_API])

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily
    from rlhfkit.collect.generate import generate_candidates
    from rlhfkit.data import Ranking, Response, read_preferences, write_rankings
    from rlhfkit.hacking import HackingMonitor, scan, word_frequency_shift
    from rlhfkit.ppo import PPOConfig, PPOTrainer
    from rlhfkit.reward import RewardConfig, RewardModel, train_reward_model


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'rlhfkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
