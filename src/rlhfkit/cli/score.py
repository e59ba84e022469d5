"""``rlhfkit score``: add a reward-model score to every response of a JSONL file.

Accepted records (one per line; every other field is kept as it is):

- rankings or candidates: ``{"prompt", "responses": [{"id", "text"}, ...], ...}`` → each response
  object gets ``"score"``;
- prompt/response: ``{"prompt", "response"}`` → the record gets ``"score"``;
- pairs: ``{"prompt"?, "chosen", "rejected"}`` (TRL, HH-RLHF) → ``"chosen_score"`` and
  ``"rejected_score"``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.cli._common import parse_config
from rlhfkit.errors import DataError
from rlhfkit.runtime.logs import get_logger


@dataclass
class ScoreConfig:
    """Score responses with a reward model trained by rlhfkit train-rm (or any one-output
    sequence-classification model)."""

    model: str
    """reward model directory (or hub name)"""
    data: str
    """JSONL of rankings/candidates, prompt/response records, or pairs"""
    out: str | None = None
    """output JSONL (default: standard output)"""
    batch_size: int = 32
    """responses per forward pass"""
    raw: bool = False
    """write raw scores instead of normalized ones (gain/bias not applied)"""


def _prompt_input(x: Any, path: Path, line: int) -> Any:
    """A record's prompt as a model reads it: text, or a conversation (kept as messages, so a
    reward model trained on conversations renders it with its chat template)."""
    from rlhfkit.data.messages import parse_messages

    if isinstance(x, str):
        return x
    if isinstance(x, list):
        return parse_messages(x, "prompt", path, line)
    raise DataError("'prompt' must be a string or a list of messages", path, line)


def collect(path: Path) -> tuple[list[Any], list[tuple[Any, Any]], list[tuple[int, Any, str]]]:
    """Read records; return them, the (prompt, response) pairs to score, and where each score goes
    as ``(record index, target dict, key)``."""
    from rlhfkit.data import parse_hh, parse_pair
    from rlhfkit.runtime.io import iter_jsonl

    records: list[Any] = []
    pairs: list[tuple[Any, Any]] = []
    slots: list[tuple[int, Any, str]] = []
    for line, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, line)
        idx = len(records)
        records.append(obj)
        if "responses" in obj:
            prompt = _prompt_input(obj.get("prompt", ""), path, line)
            resps = obj["responses"]
            if not isinstance(resps, list) or not resps:
                raise DataError("'responses' must be a non-empty list", path, line)
            for i, r in enumerate(resps):
                if not isinstance(r, dict) or not isinstance(r.get("text"), str):
                    raise DataError(
                        f"responses[{i}] must be an object with a string 'text'", path, line
                    )
                pairs.append((prompt, r["text"]))
                slots.append((idx, r, "score"))
        elif "response" in obj:
            if not isinstance(obj["response"], str):
                raise DataError("'response' must be a string", path, line)
            pairs.append((_prompt_input(obj.get("prompt", ""), path, line), obj["response"]))
            slots.append((idx, obj, "score"))
        elif "chosen" in obj and "rejected" in obj:
            hh = (
                "prompt" not in obj
                and isinstance(obj["chosen"], str)
                and "\n\nAssistant:" in obj["chosen"]
            )
            ranking = (parse_hh if hh else parse_pair)(obj, path, line)
            for resp, key in zip(
                ranking.responses, ("chosen_score", "rejected_score"), strict=True
            ):
                pairs.append((ranking.model_prompt, resp.model_input))
                slots.append((idx, obj, key))
        else:
            raise DataError(
                "expected 'responses' (rankings/candidates), 'response', or 'chosen'+'rejected'",
                path,
                line,
            )
    if not records:
        raise DataError("no records found (the file is empty)", path)
    return records, pairs, slots


def main(argv: list[str]) -> int:
    config = parse_config(
        ScoreConfig,
        argv,
        prog="rlhfkit score",
        description="Add a reward-model score to every response of a JSONL file.",
    )
    from rlhfkit.models import RewardModel
    from rlhfkit.runtime.io import atomic_open

    records, pairs, slots = collect(Path(config.data))
    rm = RewardModel.from_pretrained(config.model, trained=True, option="--model")
    scores = rm.score(
        [p for p, _ in pairs], [r for _, r in pairs], config.batch_size, normalized=not config.raw
    ).tolist()
    for (_, target, key), s in zip(slots, scores, strict=True):
        target[key] = s
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if config.out is None:
        sys.stdout.writelines(lines)
    else:
        with atomic_open(config.out) as f:
            f.writelines(lines)
        get_logger("score").info(f"scored {len(pairs)} responses -> {config.out}")
    return 0
