"""The annotation database's schema, its versions, and how a file is created and upgraded.

Version 1: items, annotators, assignments, rankings, flags. Version 2 added tables only
(sessions, released assignments, submission request ids, gold). Version 3 adds
``items.prompt_messages``: a conversational prompt's messages (JSON), NULL for plain text.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from rlhfkit.errors import DataError

SCHEMA_VERSION = 3

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


def _add_prompt_messages(conn: sqlite3.Connection) -> None:
    """Version 3: the column a version-1 or -2 file lacks (idempotent)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
    if "prompt_messages" not in columns:
        conn.execute(
            "ALTER TABLE items ADD COLUMN prompt_messages TEXT "
            "CHECK (prompt_messages IS NULL OR json_valid(prompt_messages))"
        )


def create_or_upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file, or upgrade an older one in place (every version so far
    only added tables and a nullable column); refuse a file of a newer version."""
    # CREATE ... IF NOT EXISTS is idempotent, so concurrent first starts are harmless.
    conn.executescript(SCHEMA)
    conn.executescript(SCHEMA_V2)
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    found = SCHEMA_VERSION if row is None else int(row[0])
    if found <= SCHEMA_VERSION:
        _add_prompt_messages(conn)
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
            path,
        )


def create_private(path: Path) -> None:
    """Create an empty database file readable by its owner only (0600), unless it exists. An empty
    file is a valid empty SQLite database, and SQLite gives the -wal and -shm files it creates the
    database file's permissions, so annotators' rankings and token hashes stay private too."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
