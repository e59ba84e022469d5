"""Annotator quality control: agreement with gold rankings, reliability against the other
annotators, per-item disagreement and Kendall's W. Pure functions on plain lists, like
:mod:`rlhfkit.collect.annotate.agreement` (whose rankings, ``average_ranks`` and consensus they reuse).

- **Kendall's τ-b** (Kendall 1945, "The treatment of ties in ranking problems"): over the n
  responses two rankings share, ``τ_b = (n_c − n_d) / √((n_0 − n_1)(n_0 − n_2))`` with n_c / n_d
  the concordant / discordant pairs, ``n_0 = n(n−1)/2`` and n_1, n_2 the pairs tied in the first /
  second ranking. A pair tied in either ranking is neither concordant nor discordant. It is 1 for
  identical rankings, −1 for reversed ones, and undefined (None) when a ranking ties everything.
- **Agreement with the others**: the mean τ-b of an annotator's rankings against the ranked-pairs
  consensus of the *other* annotators of the same item (leave-one-out, so nobody agrees with
  themselves). **Agreement with gold**: the mean τ-b of their rankings of gold items against the
  gold rankings.
- **Reliability of an annotator**: their agreement with gold when they ranked any gold item (gold
  is the truth; the others may be wrong together), else their agreement with the others; None
  when they have neither (say, the only annotator of every item they ranked, and no gold).
- **Kendall's W** (Kendall & Babington Smith 1939; tie correction as in Siegel & Castellan 1988,
  §9.4): for m annotators ranking the same n responses, with R_i the sum of the (average) ranks
  response i got, ``S = Σ_i (R_i − m(n+1)/2)²`` and ``W = 12 S / (m²(n³ − n) − m Σ_j T_j)`` where
  ``T_j = Σ_groups (t³ − t)`` over annotator j's tie groups. W is 1 when all rankings are the same
  and 0 when they cancel out (two annotators in opposite orders). An item's **disagreement** is
  ``1 − W``. Equal to Friedman's tie-corrected χ² divided by m(n − 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from rlhfkit.collect.annotate.agreement import Ranking, _round, average_ranks, groups, ranked_pairs


def kendall_tau_b(a: Ranking, b: Ranking) -> float | None:
    """Kendall's τ-b between two rankings (best first, inner lists ties) over the ids both rank.

    None when it is undefined: fewer than two shared ids, or one of the rankings ties them all.
    """
    ra, rb = average_ranks(a), average_ranks(b)
    shared = sorted(set(ra) & set(rb))
    concordant = discordant = tied_a = tied_b = 0
    for x, y in itertools.combinations(shared, 2):
        da, db = ra[x] - ra[y], rb[x] - rb[y]
        if da == 0:
            tied_a += 1
        if db == 0:
            tied_b += 1
        if da * db > 0:
            concordant += 1
        elif da * db < 0:
            discordant += 1
    n0 = len(shared) * (len(shared) - 1) // 2
    denominator = (n0 - tied_a) * (n0 - tied_b)
    if denominator == 0:
        return None
    return (concordant - discordant) / math.sqrt(denominator)


def kendall_w(rankings: Sequence[Ranking]) -> float | None:
    """Kendall's W (coefficient of concordance, tie-corrected) of m rankings of the same responses.

    Only the ids every ranking contains count (the annotation app's rankings are complete, so that
    is all of them). None when undefined: fewer than two rankings, fewer than two ids, or every
    ranking ties everything.
    """
    if len(rankings) < 2:
        return None
    keep = set.intersection(*({x for g in groups(r) for x in g} for r in rankings))
    restricted = [_restrict(r, keep) for r in rankings]  # ranks then run 1..n for everyone
    ranks = [average_ranks(r) for r in restricted]
    ids = sorted(keep)
    m, n = len(ranks), len(ids)
    if n < 2:
        return None
    totals = [sum(r[i] for r in ranks) for i in ids]
    mean = m * (n + 1) / 2
    s = sum((t - mean) ** 2 for t in totals)
    ties = sum(len(g) ** 3 - len(g) for r in restricted for g in r)
    denominator = m * m * (n**3 - n) - m * ties
    if denominator <= 0:
        return None
    return 12 * s / denominator


def _restrict(ranking: Ranking, keep: set[str]) -> list[list[str]]:
    """The ranking's tie groups with only the ``keep`` ids, empty groups dropped."""
    out = [[x for x in g if x in keep] for g in groups(ranking)]
    return [g for g in out if g]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def reference_taus(
    items: Sequence[dict[str, Any]], gold: dict[int, Ranking]
) -> list[tuple[str, int, str, float]]:
    """``(annotator, item_id, reference, τ_b)`` for every ranking that has a reference.

    ``items``: ``Store.rankings_by_item`` output; ``gold``: item id -> gold ranking. The reference
    is ``"gold"`` on a gold item, else ``"others"``: the ranked-pairs consensus of the item's other
    annotators (their one ranking when there is one other). Undefined τ (a fully tied ranking or
    consensus) is left out.
    """
    out: list[tuple[str, int, str, float]] = []
    for it in items:
        rankings = it["rankings"]
        for i, r in enumerate(rankings):
            if it["item_id"] in gold:
                kind, reference = "gold", gold[it["item_id"]]
            elif len(rankings) >= 2:
                others = [o["ranking"] for j, o in enumerate(rankings) if j != i]
                kind, reference = "others", ranked_pairs(others)
            else:
                continue
            tau = kendall_tau_b(r["ranking"], reference)
            if tau is not None:
                out.append((r["annotator"], it["item_id"], kind, tau))
    return out


def annotator_quality(
    items: Sequence[dict[str, Any]], gold: dict[int, Ranking]
) -> dict[str, dict[str, Any]]:
    """Per annotator: ``tau_vs_others`` over ``items_with_others`` (leave-one-out consensus, on
    items without gold), ``gold_tau`` over ``gold_items`` with ``gold_exact`` (rankings identical to
    gold), and ``reliability``: ``gold_tau`` when there is one, else ``tau_vs_others``
    (``reliability_from`` says which; ``compared``: how many rankings it is the mean of)."""
    taus = reference_taus(items, gold)
    names = sorted({r["annotator"] for it in items for r in it["rankings"]})
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [(kind, t) for who, _, kind, t in taus if who == name]
        peers = [t for kind, t in mine if kind == "others"]
        golds = [t for kind, t in mine if kind == "gold"]
        exact = sum(
            1
            for it in items
            if it["item_id"] in gold
            for r in it["rankings"]
            if r["annotator"] == name and groups(r["ranking"]) == groups(gold[it["item_id"]])
        )
        source = "gold" if golds else "others" if peers else None
        used = golds if golds else peers
        out[name] = {
            "reliability": _round(_mean(used)),
            "reliability_from": source,
            "compared": len(used),
            "tau_vs_others": _round(_mean(peers)),
            "items_with_others": len(peers),
            "gold_tau": _round(_mean(golds)),
            "gold_items": len(golds),
            "gold_exact": exact,
        }
    return out


def item_disagreement(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per item with two or more rankings: Kendall's W, the mean τ-b over pairs of annotators, and
    ``disagreement = 1 − W``; most disagreed first (items where W is undefined come last)."""
    out = []
    for it in items:
        rankings = [r["ranking"] for r in it["rankings"]]
        if len(rankings) < 2:
            continue
        w = kendall_w(rankings)
        pair_taus = [kendall_tau_b(a, b) for a, b in itertools.combinations(rankings, 2)]
        out.append(
            {
                "item_id": it["item_id"],
                "prompt": it["prompt"],
                "annotators": len(rankings),
                "kendall_w": _round(w),
                "mean_tau": _round(_mean([t for t in pair_taus if t is not None])),
                "disagreement": None if w is None else _round(1 - w),
            }
        )
    out.sort(key=lambda d: (d["disagreement"] is None, -(d["disagreement"] or 0), d["item_id"]))
    return out


def gold_feedback(
    items: Sequence[dict[str, Any]], gold: dict[int, Ranking]
) -> list[dict[str, Any]]:
    """Per gold item: each of its annotators' τ-b against the gold ranking (None for a ranking that
    ties everything) and their mean."""
    out = []
    for it in items:
        if it["item_id"] not in gold:
            continue
        taus = {
            r["annotator"]: _round(kendall_tau_b(r["ranking"], gold[it["item_id"]]))
            for r in it["rankings"]
        }
        known = [t for t in taus.values() if t is not None]
        out.append({"item_id": it["item_id"], "taus": taus, "mean_tau": _round(_mean(known))})
    return out


def quality_report(
    items: Sequence[dict[str, Any]], gold: dict[int, Ranking], top: int = 10
) -> dict[str, Any]:
    """Everything ``stats`` shows for quality control: gold counts, mean Kendall's W over items with
    two or more annotators, per-annotator quality, each gold item's annotators against gold, and
    the ``top`` most disagreed items by 1 − W."""
    per_item = item_disagreement(items)
    ws = [d["kendall_w"] for d in per_item if d["kendall_w"] is not None]
    return {
        "gold_items": len(gold),
        "gold_rankings": sum(len(it["rankings"]) for it in items if it["item_id"] in gold),
        "kendall_w_mean": _round(_mean(ws)),
        "kendall_w_items": len(ws),
        "annotators": annotator_quality(items, gold),
        "gold": gold_feedback(items, gold),
        "most_disagreed": per_item[:top],
    }


def store_quality(store: Any) -> dict[str, Any]:
    """:func:`quality_report` of everything in an annotation store (the one function here that
    reads a database: ``stats`` and the admin page show its result)."""
    return quality_report(store.rankings_by_item(1), store.gold())
