"""UltraFeedback-style records: per-completion ratings read as a :class:`Ranking` with ties."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlhfkit.data.fields import extra_fields
from rlhfkit.data.records import Ranking, Response, _build, _json_type
from rlhfkit.errors import DataError

# -- UltraFeedback -----------------------------------------------------------------------------

UF_TEXT_FIELDS = ("response", "text", "completion")
UF_SCORE_FIELDS = ("fine-grained_score", "overall_score", "score", "rating")


def parse_ultrafeedback(obj: Any, path: Path | None = None, line: int | None = None) -> Ranking:
    """An UltraFeedback-style record → a ranking of its completions with ties.

    A completion's score is the mean of the numeric ``Rating`` of its ``annotations`` aspects
    (``"N/A"`` ignored) — the choice of HuggingFaceH4/ultrafeedback_binarized. Without usable
    annotations, the first present of ``fine-grained_score``, ``overall_score``, ``score``,
    ``rating`` is used. Equal scores (to 6 decimals) are tied. Completions with no score at all
    are left out (counted in ``meta["unrated_completions"]``). Response ids are the completion
    indices ``"0"``, ``"1"``, …; each response's ``meta`` keeps its ``score`` and other fields.
    """
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {_json_type(obj)}", path, line)
    key = "instruction" if "instruction" in obj else "prompt"
    if key not in obj:
        raise DataError("missing field 'instruction' (or 'prompt')", path, line)
    prompt = obj[key]
    if not isinstance(prompt, str):
        raise DataError(f"field {key!r} must be a string, got {_json_type(prompt)}", path, line)
    if "completions" not in obj:
        raise DataError("missing field 'completions'", path, line)
    comps = obj["completions"]
    if not isinstance(comps, list):
        raise DataError(f"field 'completions' must be a list, got {_json_type(comps)}", path, line)
    responses: list[Response] = []
    scores: dict[str, float] = {}
    unrated = 0
    for i, c in enumerate(comps):
        if not isinstance(c, dict):
            raise DataError(f"completions[{i}] must be an object, got {_json_type(c)}", path, line)
        text_key = next((k for k in UF_TEXT_FIELDS if k in c), None)
        if text_key is None:
            raise DataError(f"completions[{i}] is missing field 'response'", path, line)
        text = c[text_key]
        if not isinstance(text, str):
            raise DataError(
                f"completions[{i}].{text_key} must be a string, got {_json_type(text)}", path, line
            )
        score, source = _uf_score(c, i, path, line)
        if score is None:
            unrated += 1
            continue
        rid = str(i)
        extra = extra_fields(c, (text_key, "annotations", "critique", "custom_system_prompt"))
        responses.append(Response(rid, text, {**extra, "score": score, "score_source": source}))
        scores[rid] = score
    # Best first; equal scores (rounded, so 4.25 from different aspect orders matches) tie.
    levels = sorted({round(s, 6) for s in scores.values()}, reverse=True)
    ranking: list[str | list[str]] = []
    for level in levels:
        group = [rid for rid, s in scores.items() if round(s, 6) == level]
        ranking.append(group if len(group) > 1 else group[0])
    meta = extra_fields(obj, (key, "completions"))
    if unrated:
        meta["unrated_completions"] = unrated
    if len(responses) < 2:
        raise DataError(
            f"needs at least two rated completions, got {len(responses)} ({unrated} without a rating)",
            path,
            line,
        )
    return _build(prompt, responses, ranking, None, meta, None, path, line)


def _uf_score(
    c: dict[str, Any], i: int, path: Path | None, line: int | None
) -> tuple[float | None, str]:
    ann = c.get("annotations")
    if isinstance(ann, dict) and ann:
        ratings: list[float] = []
        for aspect, val in ann.items():
            for entry in val if isinstance(val, list) else [val]:
                if isinstance(entry, dict) and "Rating" in entry:
                    r = _number(entry["Rating"])
                    if r is None and str(entry["Rating"]).strip().upper() not in ("N/A", "NA", ""):
                        raise DataError(
                            f"completions[{i}].annotations.{aspect}.Rating is not a number: {entry['Rating']!r}",
                            path,
                            line,
                        )
                    if r is not None:
                        ratings.append(r)
        if ratings:
            return sum(ratings) / len(ratings), "annotations"
    for key in UF_SCORE_FIELDS:
        if key in c and c[key] is not None:
            r = _number(c[key])
            if r is None:
                raise DataError(f"completions[{i}].{key} is not a number: {c[key]!r}", path, line)
            return r, key
    return None, ""


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, str):
        try:
            v = float(x.strip())
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None
