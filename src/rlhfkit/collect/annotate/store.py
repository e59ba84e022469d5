"""The annotation store: one SQLite file holding items, annotators, assignments and their results.

Every connection runs in WAL mode (readers never block the one writer) with foreign keys on, a busy
timeout, and ``synchronous=FULL`` so that a submission acknowledged with 201 survives a crash of
the server or of the machine. Every write transaction starts with ``BEGIN IMMEDIATE``: a deferred
transaction that later upgrades to a write lock fails with SQLITE_BUSY *without* waiting for the
busy timeout, which is exactly the assignment race that annotation tools keep rediscovering.
SQL parameters are always bound, never formatted into the statement.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.collect.annotate.commit import GroupCommit
from rlhfkit.errors import DataError, RlhfkitError

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id           INTEGER PRIMARY KEY,
    prompt       TEXT NOT NULL,
    -- JSON list of {"id", "text"} in the order of the imported file
    responses    TEXT NOT NULL CHECK (json_valid(responses) AND json_array_length(responses) >= 2),
    -- sha256 of prompt + responses: importing the same file twice adds nothing
    content_hash TEXT NOT NULL UNIQUE,
    source       TEXT,
    created_at   REAL NOT NULL,
    -- assignments that hold a slot (assigned or submitted); kept by the triggers below, so that
    -- picking the next item is an index walk rather than a count over every item
    active       INTEGER NOT NULL DEFAULT 0 CHECK (active >= 0)
);
CREATE INDEX IF NOT EXISTS items_by_active ON items(active DESC, id);
CREATE TABLE IF NOT EXISTS annotators (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    -- sha256 of the secret token; the token itself is shown once and never stored
    token_hash TEXT NOT NULL UNIQUE CHECK (length(token_hash) = 64),
    is_admin   INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    id             INTEGER PRIMARY KEY,
    item_id        INTEGER NOT NULL REFERENCES items(id),
    annotator_id   INTEGER NOT NULL REFERENCES annotators(id),
    -- JSON list of response ids in the (random, per annotator) order they were shown
    response_order TEXT NOT NULL CHECK (json_valid(response_order)),
    status         TEXT NOT NULL CHECK (status IN ('assigned', 'submitted', 'skipped')),
    assigned_at    REAL NOT NULL,
    finished_at    REAL,
    skip_reason    TEXT CHECK (skip_reason IS NULL OR length(skip_reason) <= 500),
    UNIQUE (item_id, annotator_id)
);
CREATE INDEX IF NOT EXISTS assignments_by_annotator ON assignments(annotator_id, status);
CREATE INDEX IF NOT EXISTS assignments_open ON assignments(status, assigned_at);
CREATE TRIGGER IF NOT EXISTS assignments_active_insert AFTER INSERT ON assignments
WHEN NEW.status IN ('assigned', 'submitted')
BEGIN UPDATE items SET active = active + 1 WHERE id = NEW.item_id; END;
CREATE TRIGGER IF NOT EXISTS assignments_active_delete AFTER DELETE ON assignments
WHEN OLD.status IN ('assigned', 'submitted')
BEGIN UPDATE items SET active = active - 1 WHERE id = OLD.item_id; END;
CREATE TRIGGER IF NOT EXISTS assignments_active_update AFTER UPDATE OF status ON assignments
BEGIN
    UPDATE items SET active = active
        - (OLD.status IN ('assigned', 'submitted')) + (NEW.status IN ('assigned', 'submitted'))
    WHERE id = NEW.item_id;
END;
CREATE TABLE IF NOT EXISTS rankings (
    id            INTEGER PRIMARY KEY,
    assignment_id INTEGER NOT NULL UNIQUE REFERENCES assignments(id),
    item_id       INTEGER NOT NULL REFERENCES items(id),
    annotator_id  INTEGER NOT NULL REFERENCES annotators(id),
    -- best first; an inner list is a tie: ["r2", ["r0", "r3"], "r1"]
    ranking       TEXT NOT NULL CHECK (json_valid(ranking)),
    created_at    REAL NOT NULL,
    UNIQUE (item_id, annotator_id)
);
CREATE TABLE IF NOT EXISTS flags (
    id           INTEGER PRIMARY KEY,
    item_id      INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    reason       TEXT NOT NULL CHECK (reason IN ('harmful', 'broken', 'spam', 'other')),
    note         TEXT CHECK (note IS NULL OR length(note) <= 1000),
    created_at   REAL NOT NULL,
    UNIQUE (item_id, annotator_id, reason)
);
"""

# Version 2 (issue #20) adds four tables and changes none, so a version-1 file is upgraded in
# place by creating them (Store.init): server-side sessions that logout revokes; assignments
# released by the timeout, so that a late submission can still be taken; the client request
# ids of submissions, so that a retried submission is answered with the ranking it saved; and
# gold items (quality control, docs/annotation.md): items whose right ranking an admin knows.
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS sessions (
    -- keyed hash (HMAC with the server secret) of the cookie value; the value is never stored
    id_hash      TEXT PRIMARY KEY CHECK (length(id_hash) = 64),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    created_at   REAL NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_annotator ON sessions(annotator_id);
CREATE TABLE IF NOT EXISTS released_assignments (
    item_id        INTEGER NOT NULL REFERENCES items(id),
    annotator_id   INTEGER NOT NULL REFERENCES annotators(id),
    response_order TEXT NOT NULL CHECK (json_valid(response_order)),
    assigned_at    REAL NOT NULL,
    released_at    REAL NOT NULL,
    PRIMARY KEY (item_id, annotator_id)
);
CREATE TABLE IF NOT EXISTS ranking_requests (
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    request_id   TEXT NOT NULL CHECK (length(request_id) BETWEEN 1 AND 64),
    ranking_id   INTEGER NOT NULL UNIQUE REFERENCES rankings(id),
    PRIMARY KEY (annotator_id, request_id)
);
CREATE TABLE IF NOT EXISTS gold (
    item_id    INTEGER PRIMARY KEY REFERENCES items(id),
    -- best first, ties as inner lists, in the canonical form of normalize_ranking
    ranking    TEXT NOT NULL CHECK (json_valid(ranking)),
    note       TEXT CHECK (note IS NULL OR length(note) <= 1000),
    created_at REAL NOT NULL
);
"""

FLAG_REASONS = ("harmful", "broken", "spam", "other")
MAX_NAME_CHARS = 64
MAX_RESPONSES = 64
"""responses per item, and so response ids per ranking (the API caps a ranking at this length)"""


class NotFound(RlhfkitError):
    """The item does not exist or is not assigned to this annotator (the two are not told apart)."""


class Conflict(RlhfkitError):
    """The assignment is already finished (submitted or skipped)."""


class InvalidRanking(RlhfkitError):
    """A ranking that does not order exactly the item's responses."""


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    is_admin: bool
    token_hash: str


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so one SHA-256 is enough (no brute force to slow down)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_ranking_shape(ranking: Any) -> list[str | list[str]]:
    """The checks that need no database, in one linear pass: a non-empty list of id strings and
    non-empty tie groups, at most :data:`MAX_RESPONSES` ids in all, none twice. Returns the
    canonical form (singleton tie groups become plain ids).

    Runs *before* the write transaction (issue #20: a 64 KiB ranking of repeated ids used to cost
    seconds of CPU while holding the write lock); the length cap stops it at the first id too many.
    """
    if not isinstance(ranking, list) or not ranking:
        raise InvalidRanking("ranking must be a non-empty list of response ids, best first")
    seen: set[str] = set()
    repeated: set[str] = set()
    out: list[str | list[str]] = []
    n = 0
    for entry in ranking:
        group = entry if isinstance(entry, list) else [entry]
        if not group:
            raise InvalidRanking("empty tie group in ranking")
        for rid in group:
            n += 1
            if n > MAX_RESPONSES:
                raise InvalidRanking(f"ranking lists more than {MAX_RESPONSES} response ids")
            if not isinstance(rid, str):
                raise InvalidRanking(f"ranking entries must be response id strings, got {rid!r}")
            (repeated if rid in seen else seen).add(rid)
        out.append(group[0] if len(group) == 1 else list(group))
    if repeated:
        raise InvalidRanking(
            "ranking must list each response exactly once (repeated: "
            + ", ".join(sorted(repeated))
            + ")"
        )
    return out


def normalize_ranking(ranking: Any, response_ids: list[str]) -> list[str | list[str]]:
    """Check that ``ranking`` orders every response id exactly once; return it in canonical form.

    Canonical: singleton tie groups become plain ids, empty groups are errors. Raises
    :class:`InvalidRanking` with a message naming the missing, repeated or unknown ids. Linear in
    the length of the ranking (:func:`check_ranking_shape`, then set operations).
    """
    out = check_ranking_shape(ranking)
    listed = {rid for g in out for rid in (g if isinstance(g, list) else [g])}
    known = set(response_ids)
    foreign = sorted(listed - known)
    missing = [r for r in response_ids if r not in listed]
    problems = []
    if foreign:
        problems.append(f"not responses of this item: {', '.join(foreign)}")
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if problems:
        raise InvalidRanking(
            "ranking must list each response exactly once (" + "; ".join(problems) + ")"
        )
    return out


def _validate_candidate(obj: Any, path: Path, line: int) -> tuple[str, list[dict[str, str]]]:
    if not isinstance(obj, dict):
        raise DataError(
            f"expected an object with 'prompt' and 'responses', got {type(obj).__name__}",
            path,
            line,
        )
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError("'prompt' must be a non-empty string", path, line)
    responses = obj.get("responses")
    if not isinstance(responses, list) or len(responses) < 2:
        raise DataError(
            '\'responses\' must be a list of at least 2 {"id", "text"} objects', path, line
        )
    if len(responses) > MAX_RESPONSES:
        raise DataError(
            f"{len(responses)} responses: an item holds at most {MAX_RESPONSES} (split the record)",
            path,
            line,
        )
    out: list[dict[str, str]] = []
    for j, r in enumerate(responses):
        if isinstance(r, str):  # a bare list of texts: number them
            r = {"id": f"r{j}", "text": r}
        if not isinstance(r, dict) or not isinstance(r.get("text"), str):
            raise DataError(f"responses[{j}] must be an object with a string 'text'", path, line)
        rid = r.get("id", f"r{j}")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
            raise DataError(f"responses[{j}].id must be a non-empty string", path, line)
        out.append({"id": str(rid), "text": r["text"]})
    _check_unicode(prompt, "'prompt'", path, line)
    for j, r in enumerate(out):
        _check_unicode(r["id"], f"responses[{j}].id", path, line)
        _check_unicode(r["text"], f"responses[{j}].text", path, line)
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(
            f"response ids must be unique within a record (repeated: {', '.join(dup)})", path, line
        )
    return prompt, out


def _check_unicode(value: str, what: str, path: Path, line: int) -> None:
    """JSON can spell a lone surrogate (``"\\ud800"``), which is no Unicode text: SQLite (UTF-8)
    cannot store it, so refuse it here with the place rather than fail later with a traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(
            f"{what} holds a lone surrogate ({value[e.start]!a} at character {e.start}), "
            "which is not valid Unicode text",
            path,
            line,
        ) from None


def content_hash(prompt: str, responses: list[dict[str, str]]) -> str:
    """sha256 of an item's prompt and responses (ids and texts): the same record, wherever it
    comes from, is the same item."""
    blob = json.dumps(
        {"prompt": prompt, "responses": responses}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GoldRecord:
    """One line of a gold file: the item (by id, or by the content of its prompt and responses)
    and its known ranking."""

    item_id: int | None
    content_hash: str | None
    ranking: Any
    note: str | None
    where: str
    """``file:line`` it was read from"""


def read_gold(path: str | Path) -> list[GoldRecord]:
    """Read a gold file: JSONL, one ``{"item_id", "ranking", "note"?}`` or one native ranking
    record ``{"prompt", "responses", "ranking"}`` (matched to the item imported from the same
    prompt and responses) per line. Checks the shape only; :meth:`Store.set_gold_records` checks
    the rankings against the items."""
    from rlhfkit.runtime.io import iter_jsonl

    path = Path(path)
    out = []
    for line, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or "ranking" not in obj:
            raise DataError(
                'expected {"item_id", "ranking"} or {"prompt", "responses", "ranking"}', path, line
            )
        note = obj.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > 1000):
            raise DataError("'note' must be a string of at most 1000 characters", path, line)
        if "item_id" in obj:
            item_id = obj["item_id"]
            if (
                isinstance(item_id, bool)
                or not isinstance(item_id, int)
                or not 1 <= item_id < 2**63
            ):
                raise DataError(
                    f"'item_id' must be a positive integer, got {item_id!r}", path, line
                )
            out.append(GoldRecord(item_id, None, obj["ranking"], note, f"{path}:{line}"))
        else:
            prompt, responses = _validate_candidate(obj, path, line)
            digest = content_hash(prompt, responses)
            out.append(GoldRecord(None, digest, obj["ranking"], note, f"{path}:{line}"))
    if not out:
        raise DataError("no gold records found", path)
    return out


@dataclass(frozen=True)
class CandidateItem:
    """One validated record of a candidates file, ready to insert."""

    prompt: str
    responses_json: str
    content_hash: str
    """identifies the item whatever file or line it came from: a re-import adds nothing"""
    source: str
    """``file:line`` it was read from"""


def read_candidates(path: str | Path) -> list[CandidateItem]:
    """Read and validate a whole candidates JSONL file (``{"prompt", "responses"}`` per line)
    without touching any database: a bad line raises ``DataError`` naming the file and line."""
    from rlhfkit.runtime.io import iter_jsonl

    path = Path(path)
    items = []
    for line, obj in iter_jsonl(path):
        prompt, responses = _validate_candidate(obj, path, line)
        items.append(
            CandidateItem(
                prompt=prompt,
                responses_json=json.dumps(responses, ensure_ascii=False),
                content_hash=content_hash(prompt, responses),
                source=f"{path.name}:{line}",
            )
        )
    if not items:
        raise DataError("no records found (expected JSONL with 'prompt' and 'responses')", path)
    return items


def _create_private(path: Path) -> None:
    """Create an empty database file readable by its owner only (0600), unless it exists. An empty
    file is a valid empty SQLite database, and SQLite gives the -wal and -shm files it creates the
    database file's permissions, so annotators' rankings and token hashes stay private too."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class Store:
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

    # ---- connections and transactions -------------------------------------------------------

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
        _create_private(self.path)
        try:
            conn = self._open()
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as e:
            raise DataError(f"not an SQLite database ({e})", self.path) from None
        try:
            # CREATE ... IF NOT EXISTS is idempotent, so concurrent first starts are harmless.
            conn.executescript(SCHEMA)
            conn.executescript(SCHEMA_V2)
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            found = SCHEMA_VERSION if row is None else int(row["value"])
            if found <= SCHEMA_VERSION:
                # new, or older and upgraded: every version so far only added tables (above)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),),
                )
            conn.execute("COMMIT")
            if found > SCHEMA_VERSION:
                raise DataError(
                    f"database schema version {found} is newer than this rlhfkit reads "
                    f"({SCHEMA_VERSION}): upgrade rlhfkit",
                    self.path,
                )
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

    # ---- items ------------------------------------------------------------------------------

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
                    "INSERT INTO items(prompt, responses, content_hash, source, created_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(content_hash) DO NOTHING",
                    (item.prompt, item.responses_json, item.content_hash, item.source, now),
                )
                added += cur.rowcount
        return added, len(items) - added

    def get_item(self, item_id: int) -> dict[str, Any] | None:
        with self.read() as conn:
            row = conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            return None
        return {"id": row["id"], "prompt": row["prompt"], "responses": json.loads(row["responses"])}

    # ---- annotators -------------------------------------------------------------------------

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

    # ---- assignment -------------------------------------------------------------------------

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

    # ---- late and repeated submissions (schema version 2) ------------------------------------

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

    # ---- gold items -------------------------------------------------------------------------

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

    # ---- progress and results ---------------------------------------------------------------

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
                       i.prompt, i.responses
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

    # ---- sessions (schema version 2) ----------------------------------------------------------

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
