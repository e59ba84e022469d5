"""Gold items: rankings an admin knows to be right, against which annotators are measured."""

from __future__ import annotations

import json
import time
from typing import Any

from rlhfkit.collect.annotate.store.records import (
    GoldRecord,
    InvalidRanking,
    NotFound,
    normalize_ranking,
)


class Gold:
    """The :class:`~rlhfkit.collect.annotate.store.Store` methods of this group (its connection
    helpers ``read()`` and ``write()`` are in the core)."""

    def set_gold(
        self, item_id: int, ranking: Any, note: str | None = None
    ) -> list[str | list[str]]:
        """Mark an item as gold with its known ranking (replacing an earlier one); returns the
        ranking in canonical form. Raises NotFound for an unknown item, InvalidRanking for a
        ranking that does not order exactly its responses or ties them all."""
        return self.set_gold_records([GoldRecord(item_id, None, ranking, note, "")])[0]

    def set_gold_records(self, records: list[GoldRecord]) -> list[list[str | list[str]]]:
        """Mark several items as gold at once, all or nothing: every record is checked (its item
        exists, its ranking orders the item's responses) before one transaction writes them."""
        with self.read() as conn:
            by_hash = {}
            hashes = [r.content_hash for r in records if r.content_hash is not None]
            for digest in hashes:
                row = conn.execute(
                    "SELECT id FROM items WHERE content_hash = ?", (digest,)
                ).fetchone()
                if row is not None:
                    by_hash[digest] = row["id"]
        rows = []
        for rec in records:
            where = f"{rec.where}: " if rec.where else ""
            item_id = rec.item_id if rec.content_hash is None else by_hash.get(rec.content_hash)
            item = self.get_item(item_id) if item_id is not None else None
            if item is None:
                what = (
                    f"item {rec.item_id}"
                    if rec.content_hash is None
                    else "item with this prompt and these responses"
                )
                raise NotFound(f"{where}no {what} in the database (import it first)")
            try:
                canonical = normalize_ranking(rec.ranking, [r["id"] for r in item["responses"]])
            except InvalidRanking as e:
                raise InvalidRanking(f"{where}{e}") from None
            if len(canonical) < 2:
                raise InvalidRanking(
                    f"{where}a gold ranking must order the responses, not tie them all"
                )
            rows.append((item_id, json.dumps(canonical), rec.note, time.time()))
        with self.write() as conn:
            conn.executemany(
                "INSERT INTO gold(item_id, ranking, note, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(item_id) DO UPDATE SET ranking = excluded.ranking, "
                "note = excluded.note, created_at = excluded.created_at",
                rows,
            )
        return [json.loads(r[1]) for r in rows]

    def remove_gold(self, item_id: int) -> bool:
        """Unmark a gold item; False if it was not gold. Its rankings stay."""
        with self.write() as conn:
            return conn.execute("DELETE FROM gold WHERE item_id = ?", (item_id,)).rowcount == 1

    def gold(self) -> dict[int, list[str | list[str]]]:
        """Item id -> gold ranking."""
        with self.read() as conn:
            rows = conn.execute("SELECT item_id, ranking FROM gold").fetchall()
        return {r["item_id"]: json.loads(r["ranking"]) for r in rows}

    def gold_items(self) -> list[dict[str, Any]]:
        """Every gold item with its prompt, ranking, note and how many rankings it has."""
        with self.read() as conn:
            rows = conn.execute(
                """
                SELECT g.item_id, g.ranking, g.note, g.created_at, i.prompt,
                       (SELECT COUNT(*) FROM rankings r WHERE r.item_id = g.item_id) AS n
                FROM gold g JOIN items i ON i.id = g.item_id ORDER BY g.item_id
                """
            ).fetchall()
        return [
            {
                "item_id": r["item_id"],
                "prompt": r["prompt"],
                "ranking": json.loads(r["ranking"]),
                "note": r["note"],
                "rankings": r["n"],
                "created_at": r["created_at"],
            }
            for r in rows
        ]
