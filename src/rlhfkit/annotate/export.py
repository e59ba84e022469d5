"""Turn the store's rankings into files ``train-rm`` reads: native rankings or TRL pairs.

Native record (one per annotator ranking, or one per item with a consensus)::

    {"prompt": "...", "responses": [{"id": "r0", "text": "..."}, ...],
     "ranking": ["r2", ["r0", "r3"], "r1"], "annotator": "alice",
     "meta": {"item_id": 7, "shown_order": ["r3", "r1", "r0", "r2"], "seconds": 41.2}}

TRL pairs: ``{"prompt", "chosen", "rejected"}`` for every strictly ordered pair (ties give none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.annotate.agreement import CONSENSUS, groups
from rlhfkit.annotate.store import Store
from rlhfkit.errors import ConfigError

FORMATS = ("rankings", "pairs")


def export_records(
    store: Store, format: str = "rankings", min_annotators: int = 1, consensus: str | None = None
) -> list[dict[str, Any]]:
    """Records to export. ``consensus`` (``ranked-pairs`` or ``borda``) merges each item's
    rankings into one; without it every annotator's ranking is its own record."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r} (rankings or pairs)")
    if consensus is not None and consensus not in CONSENSUS:
        raise ConfigError(f"unknown consensus method {consensus!r} ({', '.join(CONSENSUS)})")
    if min_annotators < 1:
        raise ConfigError("--min-annotators must be at least 1")
    rankings: list[dict[str, Any]] = []
    for item in store.rankings_by_item(min_annotators):
        base = {"prompt": item["prompt"], "responses": item["responses"]}
        if consensus is not None:
            merged = CONSENSUS[consensus]([r["ranking"] for r in item["rankings"]])
            meta = {
                "item_id": item["item_id"],
                "consensus": consensus,
                "annotators": [r["annotator"] for r in item["rankings"]],
            }
            rankings.append({**base, "ranking": merged, "meta": meta})
            continue
        for r in item["rankings"]:
            meta = {
                "item_id": item["item_id"],
                "shown_order": r["shown_order"],
                "seconds": r["seconds"],
            }
            rankings.append(
                {**base, "ranking": r["ranking"], "annotator": r["annotator"], "meta": meta}
            )
    if format == "rankings":
        return rankings
    return [pair for rec in rankings for pair in ranking_to_trl_pairs(rec)]


def ranking_to_trl_pairs(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every strictly ordered pair of a native record as TRL ``prompt/chosen/rejected``."""
    text = {r["id"]: r["text"] for r in record["responses"]}
    gs = groups(record["ranking"])
    out = []
    for i, better in enumerate(gs):
        for worse in gs[i + 1 :]:
            for w in better:
                for lo in worse:
                    out.append(
                        {"prompt": record["prompt"], "chosen": text[w], "rejected": text[lo]}
                    )
    return out


def write_export(path: str | Path, records: list[dict[str, Any]]) -> int:
    """Write records as JSONL atomically (a kill never leaves half a file); returns the count."""
    from rlhfkit.io import write_jsonl

    return write_jsonl(path, records)
