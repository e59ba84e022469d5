"""rlhfkit: the whole RLHF pipeline — collect rankings, train a reward model with the
Bradley-Terry loss, tune a policy with PPO under a KL penalty, and detect reward hacking."""

__version__ = "0.1.0"
