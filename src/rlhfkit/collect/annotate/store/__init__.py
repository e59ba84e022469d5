"""The annotation store (one SQLite file) and the records it keeps; see :mod:`.core`."""

from rlhfkit.collect.annotate.store.core import Store
from rlhfkit.collect.annotate.store.records import (
    FLAG_REASONS,
    MAX_NAME_CHARS,
    MAX_RESPONSES,
    Annotator,
    CandidateItem,
    Conflict,
    GoldRecord,
    InvalidRanking,
    NotFound,
    check_ranking_shape,
    content_hash,
    hash_token,
    normalize_ranking,
    read_candidates,
    read_gold,
    validate_candidate,
)
from rlhfkit.collect.annotate.store.schema import SCHEMA_VERSION

__all__ = [
    "FLAG_REASONS", "MAX_NAME_CHARS", "MAX_RESPONSES", "SCHEMA_VERSION", "Annotator",
    "CandidateItem", "Conflict", "GoldRecord", "InvalidRanking", "NotFound", "Store",
    "check_ranking_shape", "content_hash", "hash_token", "normalize_ranking", "read_candidates",
    "read_gold", "validate_candidate",
]  # fmt: skip
