"""Moved to :mod:`rlhfkit.collect.generate` and :mod:`rlhfkit.ppo.rollout` (these names still
import from here)."""

from rlhfkit.collect.generate import (  # noqa: F401
    decode_responses,
    encode_prompts,
    generate,
    left_pad,
    position_ids_from_mask,
    truncate_after_stop,
)
from rlhfkit.ppo.rollout import Rollout  # noqa: F401
