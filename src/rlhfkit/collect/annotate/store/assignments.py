"""Handing out items to annotators (each item to ``overlap`` different people, one open
assignment at a time, released after a timeout) and taking back their rankings, skips and flags:
each write one ``BEGIN IMMEDIATE`` transaction, a ranking validated before the lock."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from typing import Any

from rlhfkit.collect.annotate.store.records import (
    FLAG_REASONS,
    Conflict,
    InvalidRanking,
    NotFound,
    check_ranking_shape,
    normalize_ranking,
)


class Assignments:
    """The :class:`~rlhfkit.collect.annotate.store.Store` methods of this group (its connection
    helpers ``read()`` and ``write()`` are in the core)."""

    def next_item(
        self, annotator_id: int, overlap: int, assignment_timeout_s: float | None = None
    ) -> dict[str, Any] | None:
        """The annotator's open item, or a newly assigned one, or None when nothing is left.

        One IMMEDIATE transaction: count, choose and insert happen under the write lock, so two
        annotators asking at once can never push an item past ``overlap``; ``UNIQUE(item_id,
        annotator_id)`` makes a second assignment of one item to one annotator impossible.
        Items already started by others come first, so that items get finished rather than spread.
        Gold items go to every annotator, whatever the overlap, so everyone is measured on them.
        """
        now = time.time()
        with self.write() as conn:
            if assignment_timeout_s is not None:
                # An item opened and abandoned frees its slot for someone else after the timeout.
                self._remember_released(conn, now - assignment_timeout_s, now)
                conn.execute(
                    "DELETE FROM assignments WHERE status = 'assigned' AND assigned_at < ?",
                    (now - assignment_timeout_s,),
                )
            row = conn.execute(
                "SELECT id, item_id, response_order FROM assignments "
                "WHERE annotator_id = ? AND status = 'assigned' ORDER BY id LIMIT 1",
                (annotator_id,),
            ).fetchone()
            if row is None:
                pick = conn.execute(
                    """
                    SELECT i.id, i.responses FROM items i INDEXED BY items_by_active
                    WHERE (i.active < ? OR i.id IN (SELECT item_id FROM gold))
                      AND NOT EXISTS (SELECT 1 FROM assignments a
                                       WHERE a.item_id = i.id AND a.annotator_id = ?)
                    ORDER BY i.active DESC, i.id
                    LIMIT 1
                    """,
                    (overlap, annotator_id),
                ).fetchone()
                if pick is None:
                    return None
                ids = [r["id"] for r in json.loads(pick["responses"])]
                random.SystemRandom().shuffle(ids)
                conn.execute(
                    "INSERT INTO assignments(item_id, annotator_id, response_order, status, assigned_at) "
                    "VALUES (?, ?, ?, 'assigned', ?)",
                    (pick["id"], annotator_id, json.dumps(ids), now),
                )
                item_id, order = pick["id"], ids
            else:
                item_id, order = row["item_id"], json.loads(row["response_order"])
            item = conn.execute(
                "SELECT prompt, responses FROM items WHERE id = ?", (item_id,)
            ).fetchone()
        by_id = {r["id"]: r for r in json.loads(item["responses"])}
        return {
            "item_id": item_id,
            "prompt": item["prompt"],
            "responses": [{"id": rid, "text": by_id[rid]["text"]} for rid in order],
        }

    def _open_assignment(
        self, conn: sqlite3.Connection, item_id: int, annotator_id: int
    ) -> sqlite3.Row:
        row = conn.execute(
            "SELECT a.id, a.status, i.responses FROM assignments a JOIN items i ON i.id = a.item_id "
            "WHERE a.item_id = ? AND a.annotator_id = ?",
            (item_id, annotator_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"item {item_id} is not assigned to you")
        if row["status"] != "assigned":
            raise Conflict(f"item {item_id} was already {row['status']}")
        return row

    def submit_ranking(
        self, annotator_id: int, item_id: int, ranking: Any, request_id: str | None = None
    ) -> int:
        """Record a ranking for an item assigned to this annotator; returns the ranking's id.

        ``request_id`` (the client's id for this submission) makes it idempotent: sent again,
        e.g. retried after the answer was lost, it returns the id of the ranking saved the
        first time. An assignment released by the timeout is taken back if the item still has
        a free slot (:meth:`_take_back_released`).
        """
        now = time.time()
        shaped = check_ranking_shape(ranking)  # before the write lock: linear and capped
        with self.write() as conn:
            if request_id is not None:
                saved = self._saved_request(conn, annotator_id, request_id, item_id)
                if saved is not None:
                    return saved
            try:
                row = self._open_assignment(conn, item_id, annotator_id)
            except NotFound:
                row = self._take_back_released(conn, item_id, annotator_id, now)
            ids = [r["id"] for r in json.loads(row["responses"])]
            canonical = normalize_ranking(shaped, ids)
            conn.execute(
                "UPDATE assignments SET status = 'submitted', finished_at = ? WHERE id = ?",
                (now, row["id"]),
            )
            cur = conn.execute(
                "INSERT INTO rankings(assignment_id, item_id, annotator_id, ranking, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (row["id"], item_id, annotator_id, json.dumps(canonical), now),
            )
            ranking_id = int(cur.lastrowid)
            if request_id is not None:
                conn.execute(
                    "INSERT INTO ranking_requests(annotator_id, request_id, ranking_id) "
                    "VALUES (?, ?, ?)",
                    (annotator_id, request_id, ranking_id),
                )
            return ranking_id

    @staticmethod
    def _remember_released(conn: sqlite3.Connection, before: float, now: float) -> None:
        """Keep the open assignments older than ``before``, about to be released, so that their
        annotators' late submissions can be recognized."""
        conn.execute(
            "INSERT INTO released_assignments"
            "(item_id, annotator_id, response_order, assigned_at, released_at) "
            "SELECT item_id, annotator_id, response_order, assigned_at, ? FROM assignments "
            "WHERE status = 'assigned' AND assigned_at < ? "
            "ON CONFLICT(item_id, annotator_id) DO UPDATE SET "
            "response_order = excluded.response_order, assigned_at = excluded.assigned_at, "
            "released_at = excluded.released_at",
            (now, before),
        )

    def _take_back_released(
        self, conn: sqlite3.Connection, item_id: int, annotator_id: int, now: float
    ) -> sqlite3.Row:
        """The assignment of a submission that arrives after the timeout released it: restored
        (same response order) if the item still has a free slot; otherwise a :class:`Conflict`
        saying what happened. Raises :class:`NotFound` if it never was this annotator's."""
        released = conn.execute(
            "SELECT response_order, assigned_at FROM released_assignments "
            "WHERE item_id = ? AND annotator_id = ?",
            (item_id, annotator_id),
        ).fetchone()
        if released is None:
            raise NotFound(f"item {item_id} is not assigned to you")
        meta = conn.execute("SELECT value FROM meta WHERE key = 'overlap'").fetchone()
        overlap = int(meta["value"]) if meta else 1
        active = conn.execute("SELECT active FROM items WHERE id = ?", (item_id,)).fetchone()
        if active["active"] >= overlap:
            raise Conflict(
                f"item {item_id} was released after the assignment timeout and has since gone "
                "to other annotators, so this ranking was not saved"
            )
        conn.execute(
            "DELETE FROM released_assignments WHERE item_id = ? AND annotator_id = ?",
            (item_id, annotator_id),
        )
        conn.execute(
            "INSERT INTO assignments(item_id, annotator_id, response_order, status, assigned_at) "
            "VALUES (?, ?, ?, 'assigned', ?)",
            (item_id, annotator_id, released["response_order"], released["assigned_at"]),
        )
        return self._open_assignment(conn, item_id, annotator_id)

    @staticmethod
    def _saved_request(
        conn: sqlite3.Connection, annotator_id: int, request_id: str, item_id: int
    ) -> int | None:
        """The ranking already saved under this client request id, or None."""
        row = conn.execute(
            "SELECT q.ranking_id, r.item_id FROM ranking_requests q "
            "JOIN rankings r ON r.id = q.ranking_id WHERE q.annotator_id = ? AND q.request_id = ?",
            (annotator_id, request_id),
        ).fetchone()
        if row is None:
            return None
        if row["item_id"] != item_id:
            raise Conflict(
                f"request id {request_id!r} was already used for item {row['item_id']}: "
                "send a new id for each submission"
            )
        return int(row["ranking_id"])

    def skip(self, annotator_id: int, item_id: int, reason: str) -> None:
        """Skip an item: it goes back to the pool for others, never again to this annotator."""
        with self.write() as conn:
            row = self._open_assignment(conn, item_id, annotator_id)
            conn.execute(
                "UPDATE assignments SET status = 'skipped', finished_at = ?, skip_reason = ? WHERE id = ?",
                (time.time(), reason, row["id"]),
            )

    def flag(self, annotator_id: int, item_id: int, reason: str, note: str | None) -> bool:
        """Flag an item assigned to this annotator (any status); returns False if already flagged."""
        if reason not in FLAG_REASONS:
            raise InvalidRanking(f"flag reason must be one of {', '.join(FLAG_REASONS)}")
        with self.write() as conn:
            row = conn.execute(
                "SELECT 1 FROM assignments WHERE item_id = ? AND annotator_id = ?",
                (item_id, annotator_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"item {item_id} is not assigned to you")
            cur = conn.execute(
                "INSERT INTO flags(item_id, annotator_id, reason, note, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(item_id, annotator_id, reason) DO NOTHING",
                (item_id, annotator_id, reason, note, time.time()),
            )
            return cur.rowcount == 1
