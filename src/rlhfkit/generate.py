"""Moved to :mod:`rlhfkit.collect.generate` (this name still imports from here)."""

from rlhfkit.collect.generate import generate_candidates  # noqa: F401
