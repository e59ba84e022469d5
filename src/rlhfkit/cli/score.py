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
from typing import Any, Literal

from rlhfkit.cli._common import parse_config
from rlhfkit.errors import DataError


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
    ensemble_objective: Literal["mean", "worst", "uwo"] = "mean"
    """with an ensemble (train-rm --ensemble): how the members' scores combine"""
    uwo_lambda: float = 1.0
    """λ of --ensemble-objective uwo (mean − λ·variance)"""


def collect(path: Path) -> tuple[list[Any], list[tuple[Any, Any]], list[tuple[int, Any, str]]]:
    """Read records; return them, the (prompt, response) pairs to score, and where each score goes
    as ``(record index, target dict, key)``. A conversational prompt stays a list of messages, so
    a reward model trained on conversations renders it with its chat template."""
    from rlhfkit.data import parse_hh, parse_pair
    from rlhfkit.data.candidates import iter_records, parse_candidate, parse_response_row

    records: list[Any] = []
    pairs: list[tuple[Any, Any]] = []
    slots: list[tuple[int, Any, str]] = []
    for line, obj in iter_records(path):
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, line)
        idx = len(records)
        records.append(obj)
        if "responses" in obj:
            group = parse_candidate(obj, path, line, allow_empty_prompt=True)
            for j, r in enumerate(group.responses):
                target = obj["responses"][j]
                if not isinstance(target, dict):  # a bare string: written back as an object
                    target = obj["responses"][j] = {"id": r.id, "text": r.text}
                pairs.append((group.prompt, r.text))
                slots.append((idx, target, "score"))
        elif "response" in obj:
            row = parse_response_row(obj, path, line)
            pairs.append((row.prompt, row.response))
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
    from rlhfkit.errors import ConfigError
    from rlhfkit.loading import check_model_source
    from rlhfkit.reward.ensemble import is_ensemble, load_reward
    from rlhfkit.runtime.io import atomic_open

    check_model_source(config.model, "--model", allow_ensemble=True)
    records, pairs, slots = collect(Path(config.data))
    if config.raw and is_ensemble(config.model):
        raise ConfigError("--raw: an ensemble's members are combined on their normalized scores")
    rm = load_reward(config.model, config.ensemble_objective, config.uwo_lambda, "--model")
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    if config.raw:
        scores = rm.score(prompts, responses, config.batch_size, normalized=False).tolist()
    else:
        scores = rm.score(prompts, responses, config.batch_size).tolist()
    for (_, target, key), s in zip(slots, scores, strict=True):
        target[key] = s
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if config.out is None:
        sys.stdout.writelines(lines)
    else:
        with atomic_open(config.out) as f:
            f.writelines(lines)
        print(f"rlhfkit score: scored {len(pairs)} responses -> {config.out}", file=sys.stderr)
    return 0
