"""Moved to :mod:`rlhfkit.ppo.rollout` (these names still import from here)."""

from rlhfkit.ppo.rollout import (  # noqa: F401
    Rollout,
    decode_responses,
    encode_prompts,
    generate,
    left_pad,
    position_ids_from_mask,
    truncate_after_stop,
)
