"""Moved to :mod:`rlhfkit.ppo.critic` (these names still import from here)."""

from rlhfkit.loading import disable_dropout, fuse_activations  # noqa: F401
from rlhfkit.ppo.critic import (  # noqa: F401
    ActorCritic,
    ValueHead,
    build_critic,
    hidden_size_of,
    reads_same_tokens,
    trunk_of,
    value_head_from_score,
)
