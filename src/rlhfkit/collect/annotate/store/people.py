"""Annotators, their secret tokens (stored only hashed) and their server-side sessions."""

from __future__ import annotations

import secrets
import sqlite3
import time
from typing import Any

from rlhfkit.collect.annotate.store.records import (
    MAX_NAME_CHARS,
    Annotator,
    hash_token,
)
from rlhfkit.errors import RlhfkitError


class People:
    """The :class:`~rlhfkit.collect.annotate.store.Store` methods of this group (its connection
    helpers ``read()`` and ``write()`` are in the core)."""

    def add_annotator(self, name: str, is_admin: bool = False) -> str:
        """Create an annotator and return their secret token (shown once, stored only hashed)."""
        name = name.strip()
        # isprintable() is False for control characters (ESC starts terminal escape codes),
        # format characters (U+202E reverses the text around it), separators other than the
        # space, surrogates and unassigned code points: a name is shown in terminals and pages.
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise RlhfkitError(
                f"annotator name must be 1 to {MAX_NAME_CHARS} printable characters "
                f"(no control or formatting characters), got {name!a}"
            )
        token = secrets.token_urlsafe(32)
        try:
            with self.write() as conn:
                conn.execute(
                    "INSERT INTO annotators(name, token_hash, is_admin, created_at) VALUES (?, ?, ?, ?)",
                    (name, hash_token(token), int(is_admin), time.time()),
                )
        except sqlite3.IntegrityError:
            raise RlhfkitError(f"an annotator named {name!r} already exists") from None
        return token

    def rotate_token(self, name: str) -> str:
        """Give an existing annotator a new token; the old one (and its sessions) stop working."""
        token = secrets.token_urlsafe(32)
        with self.write() as conn:
            cur = conn.execute(
                "UPDATE annotators SET token_hash = ? WHERE name = ?", (hash_token(token), name)
            )
            if cur.rowcount == 0:
                raise RlhfkitError(f"no annotator named {name!r}")
            conn.execute(
                "DELETE FROM sessions WHERE annotator_id = (SELECT id FROM annotators WHERE name = ?)",
                (name,),
            )
        return token

    def annotator_by_token(self, token: str) -> Annotator | None:
        return self._annotator("token_hash", hash_token(token))

    def annotator_by_id(self, annotator_id: int) -> Annotator | None:
        return self._annotator("id", annotator_id)

    def _annotator(self, column: str, value: Any) -> Annotator | None:
        assert column in ("id", "token_hash")  # column names cannot be bound; never user input
        with self.read() as conn:
            row = conn.execute(f"SELECT * FROM annotators WHERE {column} = ?", (value,)).fetchone()
        if row is None:
            return None
        return Annotator(row["id"], row["name"], bool(row["is_admin"]), row["token_hash"])

    def create_session(self, annotator_id: int, id_hash: str, max_age_s: float) -> None:
        """Record a login session by the keyed hash of its cookie value; expired sessions of
        everyone are cleared at the same time, so the table holds only live ones."""
        now = time.time()
        with self.write() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO sessions(id_hash, annotator_id, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (id_hash, annotator_id, now, now + max_age_s),
            )

    def annotator_by_session(self, id_hash: str) -> Annotator | None:
        """The annotator of a live session (not ended, not expired), or None."""
        with self.read() as conn:
            row = conn.execute(
                "SELECT a.* FROM sessions s JOIN annotators a ON a.id = s.annotator_id "
                "WHERE s.id_hash = ? AND s.expires_at > ?",
                (id_hash, time.time()),
            ).fetchone()
        if row is None:
            return None
        return Annotator(row["id"], row["name"], bool(row["is_admin"]), row["token_hash"])

    def end_session(self, id_hash: str) -> None:
        """Revoke a session (logout): its cookie stops working at once, wherever it was copied."""
        with self.write() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))
