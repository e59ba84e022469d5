"""Turn the store's rankings into files ``train-rm`` reads: native rankings or TRL pairs.

Native record (one per annotator ranking, or one per item with a consensus)::

    {"prompt": "...", "responses": [{"id": "r0", "text": "..."}, ...],
     "ranking": ["r2", ["r0", "r3"], "r1"], "annotator": "alice",
     "meta": {"item_id": 7, "shown_order": ["r3", "r1", "r0", "r2"], "seconds": 41.2}}

TRL pairs: ``{"prompt", "chosen", "rejected"}`` for every strictly ordered pair (ties give none).

A fully tied ranking (every response in one tie group; a consensus of opposite orders ends up so)
is legal but holds no comparison: it is left out of both formats and counted
(:attr:`Records.fully_tied`), so that everything that reads the export gets the same records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.collect.annotate.agreement import CONSENSUS
from rlhfkit.collect.annotate.store import Store
from rlhfkit.errors import ConfigError

FORMATS = ("rankings", "pairs")


class Records(list[dict[str, Any]]):
    """The exported native records (a plain ``list``), plus ``fully_tied``: how many rankings
    were left out because every response in them is tied."""

    def __init__(self, records: list[dict[str, Any]], fully_tied: int):
        super().__init__(records)
        self.fully_tied = fully_tied


def is_fully_tied(ranking: list[Any]) -> bool:
    """One tie group holding every response: no strictly ordered pair."""
    return len(ranking) < 2


def export_records(
    store: Store,
    min_annotators: int = 1,
    consensus: str | None = None,
    annotators: set[str] | None = None,
) -> Records:
    """Native ranking records. ``consensus`` (``ranked-pairs`` or ``borda``) merges each item's
    rankings into one; without it every annotator's ranking is its own record. Fully tied
    rankings are left out and counted in the result's ``fully_tied``. ``annotators``: only these
    annotators' rankings (``min_annotators`` then counts the ones kept)."""
    if consensus is not None and consensus not in CONSENSUS:
        raise ConfigError(f"unknown consensus method {consensus!r} ({', '.join(CONSENSUS)})")
    if min_annotators < 1:
        raise ConfigError("--min-annotators must be at least 1")
    records: list[dict[str, Any]] = []
    for item in store.rankings_by_item(min_annotators):
        if annotators is not None:
            item = {
                **item,
                "rankings": [r for r in item["rankings"] if r["annotator"] in annotators],
            }
            if len(item["rankings"]) < min_annotators:
                continue
        base = {
            "prompt": item.get("prompt_messages") or item["prompt"],
            "responses": item["responses"],
        }
        if consensus is not None:
            merged = CONSENSUS[consensus]([r["ranking"] for r in item["rankings"]])
            meta = {
                "item_id": item["item_id"],
                "consensus": consensus,
                "annotators": [r["annotator"] for r in item["rankings"]],
            }
            records.append({**base, "ranking": merged, "meta": meta})
            continue
        for r in item["rankings"]:
            meta = {
                "item_id": item["item_id"],
                "shown_order": r["shown_order"],
                "seconds": r["seconds"],
            }
            records.append(
                {**base, "ranking": r["ranking"], "annotator": r["annotator"], "meta": meta}
            )
    kept = [rec for rec in records if not is_fully_tied(rec["ranking"])]
    return Records(kept, fully_tied=len(records) - len(kept))


@dataclass
class ReliableExport:
    """Records exported with annotator reliability, and what was left out."""

    records: Records
    reliability: dict[str, float | None]
    """every annotator's reliability (``quality.annotator_quality``); None: nothing to compare"""
    dropped: dict[str, int]
    """annotator -> rankings left out (reliability below the minimum, or unknown)"""


def export_reliable(
    store: Store,
    min_annotators: int = 1,
    consensus: str | None = None,
    min_reliability: float | None = None,
    weight_by_reliability: bool = False,
) -> ReliableExport:
    """:func:`export_records` with quality control (docs/annotation.md, "Quality control").

    ``min_reliability``: leave out every ranking of annotators whose reliability (mean Kendall's
    τ-b against gold or the others' consensus) is below it or unknown; with a consensus, the
    remaining annotators' rankings are merged. ``weight_by_reliability``: each record gets
    ``weight = max(0, reliability)`` (``train-rm`` weighs its loss by it); annotators of unknown
    reliability are left out, since no weight can be given to them.
    """
    from rlhfkit.collect.annotate.quality import annotator_quality

    if min_reliability is not None and not -1.0 <= min_reliability <= 1.0:
        raise ConfigError(
            f"--min-reliability must be in [-1, 1] (a Kendall τ), got {min_reliability}"
        )
    if weight_by_reliability and consensus is not None:
        raise ConfigError(
            "--weight-by-reliability weighs each annotator's ranking; a consensus record has no "
            "single annotator (use --min-reliability to leave unreliable annotators out of it)"
        )
    items = store.rankings_by_item(1)
    quality = annotator_quality(items, store.gold())
    reliability = {name: q["reliability"] for name, q in quality.items()}
    keep = set(reliability)
    if min_reliability is not None or weight_by_reliability:
        floor = -1.0 if min_reliability is None else min_reliability
        keep = {n for n, r in reliability.items() if r is not None and r >= floor}
    per_annotator = Counter(r["annotator"] for it in items for r in it["rankings"])
    dropped = {n: count for n, count in per_annotator.items() if n not in keep}
    records = export_records(store, min_annotators, consensus, annotators=keep)
    if weight_by_reliability:
        for rec in records:
            rec["weight"] = max(0.0, float(reliability[rec["annotator"]]))
    return ReliableExport(records, reliability, dropped)


def _rankings(records: list[dict[str, Any]]) -> list[Any]:
    from rlhfkit.data import ranking_from_native

    return [ranking_from_native(rec) for rec in records]


def export_lines(records: list[dict[str, Any]], format: str) -> list[dict[str, Any]]:
    """The rows of the exported file: the native records, or TRL pairs made from them."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r} (rankings or pairs)")
    if format == "rankings":
        return records
    from rlhfkit.data import pair_rows

    return pair_rows(_rankings(records))


def write_export(path: str | Path, records: list[dict[str, Any]], format: str) -> int:
    """Write atomically with rlhfkit.data's writers (pairs to ``*.parquet`` are written as
    Parquet); returns the number of rows written."""
    from rlhfkit.data import write_pairs, write_rankings

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r} (rankings or pairs)")
    writer = write_rankings if format == "rankings" else write_pairs
    return writer(path, _rankings(records))
