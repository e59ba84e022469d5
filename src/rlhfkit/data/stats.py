"""Summary statistics of a preference data set (``rlhfkit data stats``)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rlhfkit.data.records import Ranking


def _summary(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {
        "min": min(values),
        "mean": round(statistics.fmean(values), 2),
        "median": float(statistics.median(values)),
        "max": max(values),
    }


def preference_stats(rankings: Sequence[Ranking]) -> dict[str, Any]:
    """Counts and distributions of a list of rankings (all values JSON-serializable).

    ``pairs`` counts strictly ordered pairs (what reward training sees); ``tied_pairs`` the pairs
    left out because both responses are in one tie group.
    """
    k_dist = Counter(len(r.responses) for r in rankings)
    prompts = Counter(r.prompt for r in rankings)
    annotators = Counter(r.annotator for r in rankings if r.annotator is not None)
    n_pairs = 0
    n_tied_pairs = 0
    tie_groups = 0
    for r in rankings:
        n_pairs += len(r.pairs())
        for g in r.ranking:
            if isinstance(g, list):
                tie_groups += 1
                n_tied_pairs += len(g) * (len(g) - 1) // 2
    texts = [resp.text for r in rankings for resp in r.responses]
    return {
        "records": len(rankings),
        "prompts": sum(1 for r in rankings if r.prompt.strip()),
        "distinct_prompts": len(prompts),
        "max_records_per_prompt": max(prompts.values(), default=0),
        "responses": len(texts),
        "k_distribution": {str(k): n for k, n in sorted(k_dist.items())},
        "records_with_ties": sum(1 for r in rankings if r.has_ties),
        "tie_groups": tie_groups,
        "pairs": n_pairs,
        "tied_pairs": n_tied_pairs,
        "records_with_margin": sum(1 for r in rankings if r.margin is not None),
        "records_with_weight": sum(1 for r in rankings if r.weight is not None),
        "records_with_zero_weight": sum(1 for r in rankings if r.weight == 0),
        "annotators": len(annotators),
        "records_per_annotator": dict(annotators.most_common()),
        "records_without_annotator": sum(1 for r in rankings if r.annotator is None),
        "prompt_words": _summary([len(r.prompt.split()) for r in rankings]),
        "prompt_chars": _summary([len(r.prompt) for r in rankings]),
        "response_words": _summary([len(t.split()) for t in texts]),
        "response_chars": _summary([len(t) for t in texts]),
    }


def format_stats(stats: dict[str, Any], title: str = "") -> str:
    """The stats as an aligned plain-text table."""
    rows: list[tuple[str, str]] = []
    for key, val in stats.items():
        if isinstance(val, dict) and key in (
            "prompt_words",
            "prompt_chars",
            "response_words",
            "response_chars",
        ):
            rows.append(
                (
                    key.replace("_", " "),
                    f"min {val['min']}  mean {val['mean']}  median {val['median']}  max {val['max']}",
                )
            )
        elif key == "k_distribution":
            rows.append(("K distribution", "  ".join(f"K={k}: {n}" for k, n in val.items()) or "-"))
        elif key == "records_per_annotator":
            shown = list(val.items())[:10]
            more = f"  (+{len(val) - 10} more)" if len(val) > 10 else ""
            rows.append(
                ("records per annotator", ("  ".join(f"{a}: {n}" for a, n in shown) or "-") + more)
            )
        else:
            rows.append((key.replace("_", " "), str(val)))
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
