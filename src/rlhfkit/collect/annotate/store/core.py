"""The annotation store: one SQLite file holding items, annotators, assignments and their results.

Every connection runs in WAL mode (readers never block the one writer) with foreign keys on, a busy
timeout, and ``synchronous=FULL`` so that a submission acknowledged with 201 survives a crash of
the server or of the machine. Every write transaction starts with ``BEGIN IMMEDIATE``: a deferred
transaction that later upgrades to a write lock fails with SQLITE_BUSY *without* waiting for the
busy timeout, which is exactly the assignment race that annotation tools keep rediscovering.
SQL parameters are always bound, never formatted into the statement.

:class:`Store` is one object; its methods are grouped by what they serve: this module (the file,
its schema, items), ``people`` (annotators, tokens, sessions), ``assignments`` (handing out items
and taking rankings, skips and flags), ``gold`` and ``reports``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.collect.annotate.commit import GroupCommit
from rlhfkit.collect.annotate.store.assignments import Assignments
from rlhfkit.collect.annotate.store.gold import Gold
from rlhfkit.collect.annotate.store.people import People
from rlhfkit.collect.annotate.store.records import CandidateItem, read_candidates
from rlhfkit.collect.annotate.store.reports import Reports
from rlhfkit.collect.annotate.store.schema import create_or_upgrade, create_private
from rlhfkit.errors import DataError, RlhfkitError


class Store(People, Assignments, Gold, Reports):
    """All reads and writes of the annotation database. Thread-safe: one connection per call."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 30_000, synchronous: str = "FULL"):
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise RlhfkitError("synchronous must be FULL or NORMAL")
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        # FULL: a commit is on disk before the 201 goes out (survives power loss; ~7 ms per
        # commit on an ordinary disk). NORMAL: survives a crash or kill of the server, but the
        # last commits can be lost if the machine loses power.
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        # Writers of this process queue on a lock, wake the moment the one before them is done,
        # and share one COMMIT per burst (commit.py). Left to SQLite, a waiting writer sleeps in
        # its busy handler with growing back-off (up to 100 ms a nap), which put p99 at seconds
        # under 50 concurrent annotators; and each kept the others waiting through its own fsync.
        self._writes = GroupCommit(lambda: self._open(shared=True))

    def connect(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use and then kept: closing the last
        connection to a WAL database checkpoints it (an fsync, ~15 ms), so open-use-close per
        request would cost more than the request itself."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end) and the writers'
        connection, once no write is in flight."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._writes.close()

    def _open(self, shared: bool = False) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so Python never opens a deferred one.
        # shared: the writers' connection, used by one thread at a time under GroupCommit's lock.
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=not shared,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # one of two fixed words
        return conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        yield self.connect()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all or nothing, and committed (durably, with FULL) when the block
        ends. Begun IMMEDIATE, so other processes' writers (a CLI command beside the server) wait
        on SQLite's lock; this process's writers share COMMITs (:class:`GroupCommit`)."""
        with self._writes.transaction() as conn:
            yield conn

    def init(self) -> None:
        """Create the database (WAL mode, schema) if needed; refuse a file that is not ours."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path)
        try:
            conn = self._open()
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as e:
            raise DataError(f"not an SQLite database ({e})", self.path) from None
        try:
            create_or_upgrade(conn, self.path)
        finally:
            conn.close()

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file so it does not grow without bound."""
        with self.read() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def import_candidates(self, path: str | Path) -> tuple[int, int]:
        """Import a candidates JSONL file; returns ``(added, already_present)``.

        The whole file is validated before anything is written, in one transaction: a bad line
        leaves the database as it was.
        """
        return self.add_items(read_candidates(path))

    def add_items(self, items: list[CandidateItem]) -> tuple[int, int]:
        """Insert validated items (``read_candidates``) in one transaction, each once (by content
        hash); returns ``(added, already_present)``."""
        added = 0
        now = time.time()
        with self.write() as conn:
            for item in items:
                cur = conn.execute(
                    "INSERT INTO items(prompt, prompt_messages, responses, content_hash, source, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(content_hash) DO NOTHING",
                    (item.prompt, item.prompt_messages_json, item.responses_json,
                     item.content_hash, item.source, now),
                )  # fmt: skip
                added += cur.rowcount
        return added, len(items) - added

    def get_item(self, item_id: int) -> dict[str, Any] | None:
        with self.read() as conn:
            row = conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            return None
        return {
            "id": row["id"], "prompt": row["prompt"], "responses": json.loads(row["responses"]),
            "prompt_messages": json.loads(row["prompt_messages"]) if row["prompt_messages"] else None,
        }  # fmt: skip
