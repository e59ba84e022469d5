"""What the store reports: an annotator's progress, the overview of the admin page, every
item's rankings for export and agreement, counts."""

from __future__ import annotations

import json
from typing import Any


class Reports:
    """The :class:`~rlhfkit.collect.annotate.store.Store` methods of this group (its connection
    helpers ``read()`` and ``write()`` are in the core)."""

    def progress(self, annotator_id: int, overlap: int) -> dict[str, int]:
        """This annotator's counts: done, skipped, open, and how many more they could still get."""
        with self.read() as conn:
            counts = dict(
                conn.execute(
                    "SELECT status, COUNT(*) FROM assignments WHERE annotator_id = ? GROUP BY status",
                    (annotator_id,),
                ).fetchall()
            )
            available = conn.execute(
                """
                SELECT COUNT(*) FROM items i
                WHERE NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id AND a.annotator_id = ?)
                  AND (i.active < ? OR i.id IN (SELECT item_id FROM gold))
                """,
                (annotator_id, overlap),
            ).fetchone()[0]
        done = counts.get("submitted", 0)
        open_ = counts.get("assigned", 0)
        return {
            "done": done,
            "skipped": counts.get("skipped", 0),
            "open": open_,
            "remaining": open_ + available,
        }

    def overview(self, overlap: int) -> dict[str, Any]:
        """Everything the admin page shows except agreement: totals and per-annotator progress."""
        with self.read() as conn:
            n_items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            n_rankings = conn.execute("SELECT COUNT(*) FROM rankings").fetchone()[0]
            complete = conn.execute(
                "SELECT COUNT(*) FROM (SELECT item_id FROM rankings GROUP BY item_id HAVING COUNT(*) >= ?)",
                (overlap,),
            ).fetchone()[0]
            annotators = []
            for row in conn.execute(
                """
                SELECT n.id, n.name, n.is_admin,
                  SUM(a.status = 'submitted') AS done, SUM(a.status = 'skipped') AS skipped,
                  SUM(a.status = 'assigned') AS open,
                  MAX(a.finished_at) AS last_active
                FROM annotators n LEFT JOIN assignments a ON a.annotator_id = n.id
                GROUP BY n.id ORDER BY n.name
                """
            ):
                annotators.append(
                    {
                        "name": row["name"],
                        "is_admin": bool(row["is_admin"]),
                        "done": row["done"] or 0,
                        "skipped": row["skipped"] or 0,
                        "open": row["open"] or 0,
                        "last_active": row["last_active"],
                    }
                )
            flags = [
                {"item_id": r["item_id"], "reason": r["reason"], "count": r["n"]}
                for r in conn.execute(
                    "SELECT item_id, reason, COUNT(*) AS n FROM flags GROUP BY item_id, reason "
                    "ORDER BY n DESC, item_id LIMIT 100"
                )
            ]
        return {
            "items": n_items,
            "overlap": overlap,
            "rankings": n_rankings,
            "rankings_needed": n_items * overlap,
            "items_complete": complete,
            "annotators": annotators,
            "flags": flags,
        }

    def rankings_by_item(self, min_annotators: int = 1) -> list[dict[str, Any]]:
        """Items with at least ``min_annotators`` rankings, each with its rankings (oldest first)."""
        with self.read() as conn:
            rows = conn.execute(
                """
                SELECT r.item_id, r.ranking, r.created_at, n.name, a.response_order, a.assigned_at,
                       i.prompt, i.prompt_messages, i.responses
                FROM rankings r
                JOIN annotators n ON n.id = r.annotator_id
                JOIN assignments a ON a.id = r.assignment_id
                JOIN items i ON i.id = r.item_id
                WHERE r.item_id IN (SELECT item_id FROM rankings GROUP BY item_id HAVING COUNT(*) >= ?)
                ORDER BY r.item_id, r.id
                """,
                (min_annotators,),
            ).fetchall()
        out: list[dict[str, Any]] = []
        for row in rows:
            if not out or out[-1]["item_id"] != row["item_id"]:
                out.append(
                    {
                        "item_id": row["item_id"],
                        "prompt": row["prompt"],
                        # a conversation stays one in the export (for a chat template)
                        "prompt_messages": json.loads(row["prompt_messages"])
                        if row["prompt_messages"]
                        else None,
                        "responses": json.loads(row["responses"]),
                        "rankings": [],
                    }
                )
            out[-1]["rankings"].append(
                {
                    "annotator": row["name"],
                    "ranking": json.loads(row["ranking"]),
                    "shown_order": json.loads(row["response_order"]),
                    "seconds": round(row["created_at"] - row["assigned_at"], 3),
                    "created_at": row["created_at"],
                }
            )
        return out

    def counts(self) -> dict[str, int]:
        """Row counts per table (the load test checks these against what the server acknowledged)."""
        with self.read() as conn:
            return {
                t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # fixed table names
                for t in ("items", "annotators", "assignments", "rankings", "flags")
            }
