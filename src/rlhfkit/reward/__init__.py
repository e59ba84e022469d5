"""The reward model: a scalar head on any backbone (:mod:`.model`), trained ranking-natively on
people's rankings with the Bradley-Terry loss (:mod:`.training`, settings in :mod:`.config`),
batched one prompt with its K responses at a time (:mod:`.batching`), measured on held-out
preferences (:mod:`.evaluate`)."""

from rlhfkit.reward.config import RewardConfig
from rlhfkit.reward.evaluate import pair_metrics
from rlhfkit.reward.model import RewardModel, RewardSettings, minilm_path
from rlhfkit.reward.training import train_reward_model

__all__ = [
    "RewardConfig",
    "RewardModel",
    "RewardSettings",
    "minilm_path",
    "pair_metrics",
    "train_reward_model",
]
