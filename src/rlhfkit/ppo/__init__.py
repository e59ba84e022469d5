"""PPO with a KL penalty: the policy-optimization stage of RLHF.

Reproduces the implementation details of OpenAI's lm-human-preferences (Ziegler et al. 2019) as
catalogued in "The N Implementation Details of RLHF with PPO" (Huang et al. 2023); docs/ppo.md
lists every detail with the place it lives. The rooms, in the order a run uses them:

- ``config``: :class:`PPOConfig`, every setting with its help (the command line), batch sizes;
- ``rewards``: where the reward comes from (reward model, reward function, gold);
- ``setup``: the policy, its reference, the critic, the optimizer, the KL controller, the
  ``--fsdp`` sharder;
- ``rollout``: sampling (:class:`~rlhfkit.ppo.rollout.RolloutSampler`) and the no-gradient
  forward passes of policy, reference and critic;
- ``critic``: value heads and the module that holds policy and critic;
- ``trainer``: :class:`PPOTrainer`, the loop in numbered steps (the formulas are in
  :mod:`rlhfkit.losses`);
- ``update``: step 6, the PPO epochs over a batch;
- ``metrics``: what an update logs (step times, batch statistics, samples);
- ``monitoring``: the hacking monitor during training;
- ``checkpointing``: the trainer's saving and resuming (``OUT/policy``, checkpoints, --resume);
- ``state``: the data position, resume checks, checkpoint files, logs cut back on resume.
"""

from rlhfkit.ppo.config import HEAD_LR_MULTIPLIER, RUN_DIR_ENTRIES, PPOConfig, lora_targets
from rlhfkit.ppo.rewards import RewardFn, RewardSources, call_reward_fn, load_reward_fn
from rlhfkit.ppo.rollout import Rollout
from rlhfkit.ppo.state import PromptSampler
from rlhfkit.ppo.trainer import PPOTrainer
from rlhfkit.ppo.update import RETURN_STATS_DECAY, Batch
from rlhfkit.runtime.checkpoint import TrainingStopped

__all__ = [
    "HEAD_LR_MULTIPLIER",
    "RETURN_STATS_DECAY",
    "RUN_DIR_ENTRIES",
    "Batch",
    "PPOConfig",
    "PPOTrainer",
    "PromptSampler",
    "RewardFn",
    "RewardSources",
    "Rollout",
    "TrainingStopped",
    "call_reward_fn",
    "load_reward_fn",
    "lora_targets",
]
