"""Agreement between annotators and consensus rankings: pure functions on plain lists.

A *ranking* lists response ids best first; an inner list is a tie: ``["b", ["a", "d"], "c"]``.

- Krippendorff's α (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"): the unit is
  one response of one item, its values the ranks the annotators gave it (ties get the average of
  the ranks they span, so a tie for 2nd-3rd is 2.5). With the ordinal metric a 1-vs-2 disagreement
  costs less than 1-vs-4. α ≥ 0.8 is conventionally reliable, ≥ 0.667 tentatively so.
- Pairwise agreement: over every pair of annotators of an item and every pair of its responses,
  the share where both annotators say the same thing (a above b, b above a, or tie).
- Consensus: ranked pairs (Tideman 1987, as OpenAssistant uses) or Borda count.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

Ranking = Sequence[Any]  # list of ids or tie lists


def groups(ranking: Ranking) -> list[list[str]]:
    """``["b", ["a", "d"], "c"]`` -> ``[["b"], ["a", "d"], ["c"]]``."""
    return [list(g) if isinstance(g, (list, tuple)) else [g] for g in ranking]


def average_ranks(ranking: Ranking) -> dict[str, float]:
    """Rank per response id, 1 = best; a tie group shares the mean of the positions it spans."""
    out: dict[str, float] = {}
    position = 1
    for group in groups(ranking):
        mean = position + (len(group) - 1) / 2
        for rid in group:
            out[rid] = mean
        position += len(group)
    return out


def _delta2(
    metric: str, values: list[float], n_by_value: dict[float, float]
) -> dict[tuple[float, float], float]:
    """Squared distance between every two values under the metric (Krippendorff 2011, §C)."""
    out: dict[tuple[float, float], float] = {}
    for i, c in enumerate(values):
        for j, k in enumerate(values):
            if metric == "nominal":
                d = 0.0 if c == k else 1.0
            elif metric == "interval":
                d = (c - k) ** 2
            elif metric == "ordinal":
                lo, hi = min(i, j), max(i, j)
                between = sum(n_by_value[values[g]] for g in range(lo, hi + 1))
                d = (between - (n_by_value[c] + n_by_value[k]) / 2) ** 2
            else:
                raise ValueError(f"unknown metric {metric!r} (nominal, ordinal, interval)")
            out[(c, k)] = d
    return out


def krippendorff_alpha(units: Sequence[Sequence[float]], metric: str = "ordinal") -> float | None:
    """Krippendorff's α over ``units``, each the list of values the coders gave it (missing left out).

    ``α = 1 - D_o / D_e`` with the coincidence matrix ``o_ck = Σ_u (pairs (c, k) in u) / (m_u - 1)``,
    ``D_o = Σ o_ck δ²_ck / n`` and ``D_e = Σ n_c n_k δ²_ck / (n (n - 1))``. Units with fewer than two
    values cannot be paired and are ignored. Returns None when α is undefined (no pairable values,
    or every value the same, so that there is no variation to agree on).
    """
    coincidence: dict[tuple[float, float], float] = {}
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        for a, b in itertools.permutations(range(m), 2):
            key = (float(unit[a]), float(unit[b]))
            coincidence[key] = coincidence.get(key, 0.0) + 1.0 / (m - 1)
    if not coincidence:
        return None
    n_by_value: dict[float, float] = {}
    for (c, _), o in coincidence.items():
        n_by_value[c] = n_by_value.get(c, 0.0) + o
    values = sorted(n_by_value)
    n = sum(n_by_value.values())
    delta2 = _delta2(metric, values, n_by_value)
    observed = sum(o * delta2[key] for key, o in coincidence.items()) / n
    expected = sum(
        n_by_value[c] * n_by_value[k] * delta2[(c, k)] for c in values for k in values
    ) / (n * (n - 1))
    if expected == 0:
        return None
    return 1.0 - observed / expected


def ranking_units(items: Sequence[Sequence[Ranking]]) -> list[list[float]]:
    """One unit per (item, response): the average ranks the item's annotators gave that response."""
    units: list[list[float]] = []
    for rankings in items:
        ranks = [average_ranks(r) for r in rankings]
        for rid in sorted(set().union(*ranks)) if ranks else []:
            units.append([r[rid] for r in ranks if rid in r])
    return units


def _relation(ranks: dict[str, float], a: str, b: str) -> int:
    return (ranks[a] < ranks[b]) - (ranks[a] > ranks[b])  # 1: a above b, -1: below, 0: tie


def pairwise_agreement(rankings: Sequence[Ranking]) -> tuple[int, int]:
    """``(agreeing, compared)`` over annotator pairs × response pairs of one item."""
    ranks = [average_ranks(r) for r in rankings]
    agree = total = 0
    for r1, r2 in itertools.combinations(ranks, 2):
        shared = sorted(set(r1) & set(r2))
        for a, b in itertools.combinations(shared, 2):
            total += 1
            agree += _relation(r1, a, b) == _relation(r2, a, b)
    return agree, total


def ranked_pairs(rankings: Sequence[Ranking]) -> list[str | list[str]]:
    """Consensus by ranked pairs (Tideman): lock majorities strongest first, skip any that closes a
    cycle, then read the locked graph top down; responses left unordered by it share a tie group.

    Strength of ``a over b`` is the margin ``wins(a, b) - wins(b, a)`` (ties count for neither);
    equal margins are broken by the larger winning count, then by id so the result is stable.
    """
    ranks = [average_ranks(r) for r in rankings]
    ids = sorted(set().union(*ranks)) if ranks else []
    wins = {(a, b): 0 for a in ids for b in ids if a != b}
    for r in ranks:
        for a, b in itertools.permutations(ids, 2):
            if a in r and b in r and r[a] < r[b]:
                wins[(a, b)] += 1
    majorities = [(a, b) for (a, b), w in wins.items() if w > wins[(b, a)]]
    majorities.sort(key=lambda p: (-(wins[p] - wins[(p[1], p[0])]), -wins[p], p))
    beats: dict[str, set[str]] = {i: set() for i in ids}

    def reaches(src: str, dst: str) -> bool:
        stack, seen = [src], {src}
        while stack:
            node = stack.pop()
            if node == dst:
                return True
            for nxt in beats[node] - seen:
                seen.add(nxt)
                stack.append(nxt)
        return False

    for a, b in majorities:
        if not reaches(b, a):  # locking a -> b must not close a cycle
            beats[a].add(b)
    # Read top down: the next group is every remaining response that nothing remaining beats.
    remaining = set(ids)
    out: list[str | list[str]] = []
    while remaining:
        top = sorted(x for x in remaining if not any(x in beats[y] for y in remaining))
        out.append(top[0] if len(top) == 1 else top)
        remaining -= set(top)
    return out


def borda(rankings: Sequence[Ranking]) -> list[str | list[str]]:
    """Consensus by Borda count: each response scores ``K - rank`` per annotator (average rank for
    ties), summed; equal totals are ties."""
    ranks = [average_ranks(r) for r in rankings]
    ids = sorted(set().union(*ranks)) if ranks else []
    score = {i: sum(len(r) - r[i] for r in ranks if i in r) for i in ids}
    out: list[str | list[str]] = []
    for _, group in itertools.groupby(
        sorted(ids, key=lambda i: (-score[i], i)), key=lambda i: score[i]
    ):
        g = list(group)
        out.append(g[0] if len(g) == 1 else g)
    return out


CONSENSUS = {"ranked-pairs": ranked_pairs, "borda": borda}


def agreement_report(items: Sequence[dict[str, Any]], top: int = 10) -> dict[str, Any]:
    """Agreement over ``items`` (``Store.rankings_by_item`` output): α (ordinal and interval),
    pairwise agreement overall and per annotator, and the ``top`` most disagreed items."""
    multi = [it for it in items if len(it["rankings"]) >= 2]
    per_item = [[r["ranking"] for r in it["rankings"]] for it in multi]
    units = ranking_units(per_item)
    agree = total = 0
    per_annotator: dict[str, list[int]] = {}
    disagreed = []
    for it in multi:
        a, t = pairwise_agreement([r["ranking"] for r in it["rankings"]])
        agree, total = agree + a, total + t
        if t:
            disagreed.append(
                {
                    "item_id": it["item_id"],
                    "prompt": it["prompt"],
                    "annotators": len(it["rankings"]),
                    "agreement": a / t,
                }
            )
        for r1, r2 in itertools.permutations(it["rankings"], 2):
            a2, t2 = pairwise_agreement([r1["ranking"], r2["ranking"]])
            acc = per_annotator.setdefault(r1["annotator"], [0, 0])
            acc[0] += a2
            acc[1] += t2
    disagreed.sort(key=lambda d: (d["agreement"], -d["annotators"], d["item_id"]))
    alpha = krippendorff_alpha(units, "ordinal")
    return {
        "items_with_overlap": len(multi),
        "krippendorff_alpha_ordinal": _round(alpha),
        "krippendorff_alpha_interval": _round(krippendorff_alpha(units, "interval")),
        "alpha_reading": _reading(alpha),
        "pairwise_agreement": _round(agree / total) if total else None,
        "pairwise_agreement_by_annotator": {
            name: _round(a / t) if t else None for name, (a, t) in sorted(per_annotator.items())
        },
        "most_disagreed": disagreed[:top],
    }


def _round(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 4)


def _reading(alpha: float | None) -> str:
    if alpha is None:
        return "not enough overlapping rankings"
    if alpha >= 0.8:
        return "reliable (α ≥ 0.8)"
    if alpha >= 0.667:
        return "tentative (0.667 ≤ α < 0.8)"
    return "unreliable (α < 0.667)"
