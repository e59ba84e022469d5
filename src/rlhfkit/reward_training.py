"""Moved to :mod:`rlhfkit.reward` (these names still import from here)."""

from rlhfkit.reward.batching import (  # noqa: F401
    batch_indices,
    can_share_prompt,
    epoch_order,
    shared_prefix_length,
    shared_prompt_rewards,
    split_by_prompt,
)
from rlhfkit.reward.config import RewardConfig  # noqa: F401
from rlhfkit.reward.evaluate import evaluate, pair_metrics  # noqa: F401
from rlhfkit.reward.training import train_reward_model  # noqa: F401
