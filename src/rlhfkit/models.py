"""Moved to :mod:`rlhfkit.reward.model` (these names still import from here)."""

from rlhfkit.loading import disable_dropout  # noqa: F401
from rlhfkit.reward.model import (  # noqa: F401
    DEFAULT_CAUSAL_TEMPLATE,
    PAD_TOKEN,
    RLHFKIT_CONFIG_KEY,
    RewardModel,
    RewardSettings,
    init_reward_head,
    is_causal_lm,
    minilm_path,
    quiet_transformers,
)
