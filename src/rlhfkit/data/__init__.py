"""Preference data: the native ranking record, readers for the formats people have (TRL pairs,
HH-RLHF, UltraFeedback; JSONL / JSON / Parquet / saved ``datasets``), writers, and statistics.

See ``docs/formats.md`` for every format with an example record.
"""

from rlhfkit.data.messages import messages_to_text, parse_messages
from rlhfkit.data.prompts import read_prompt_inputs, read_prompts
from rlhfkit.data.readers import (
    FORMATS,
    Preferences,
    detect_record_format,
    parse_hh,
    parse_pair,
    parse_ultrafeedback,
    read_preferences,
    read_rankings,
    split_implicit_prompt,
)
from rlhfkit.data.records import Ranking, Response, ranking_from_native, ranking_to_pairs
from rlhfkit.data.writers import pair_rows, write_pairs, write_rankings

__all__ = [
    "FORMATS",
    "Preferences",
    "Ranking",
    "Response",
    "detect_record_format",
    "messages_to_text",
    "pair_rows",
    "parse_hh",
    "parse_messages",
    "parse_pair",
    "parse_ultrafeedback",
    "ranking_from_native",
    "ranking_to_pairs",
    "read_preferences",
    "read_prompt_inputs",
    "read_prompts",
    "read_rankings",
    "split_implicit_prompt",
    "write_pairs",
    "write_rankings",
]
