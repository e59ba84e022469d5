"""Group commit (rlhfkit.collect.annotate.commit): writers of a burst share one COMMIT, every writer returns
only once its changes are committed, a failing body loses only its own changes, a failing COMMIT
fails every writer of its batch and keeps none of their changes."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from rlhfkit.collect.annotate.commit import GroupCommit

SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (
    id        INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED,
    who       TEXT NOT NULL
);
INSERT INTO parent(id) VALUES (1);
"""


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    conn.close()

    def open_shared() -> sqlite3.Connection:
        c = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        c.execute("PRAGMA foreign_keys = ON")
        c.execute("PRAGMA synchronous = FULL")
        return c

    return path, GroupCommit(open_shared)


def rows(path) -> list[str]:
    conn = sqlite3.connect(path)  # another connection: sees committed data only
    try:
        return sorted(r[0] for r in conn.execute("SELECT who FROM child"))
    finally:
        conn.close()


def insert(gc: GroupCommit, who: str, parent: int = 1, hold: threading.Event | None = None,
           fail: bool = False) -> None:  # fmt: skip
    with gc.transaction() as conn:
        conn.execute("INSERT INTO child(parent_id, who) VALUES (?, ?)", (parent, who))
        if hold is not None:
            assert hold.wait(10)
        if fail:
            raise RuntimeError(f"{who} failed")


def run_in_thread(fn, *args, **kw) -> dict:
    out: dict = {}

    def target():
        try:
            fn(*args, **kw)
            out["ok"] = True
        except BaseException as e:
            out["error"] = e

    out["thread"] = threading.Thread(target=target)
    out["thread"].start()
    return out


def wait_arrived(gc: GroupCommit, n: int) -> None:
    deadline = time.time() + 10
    while gc._arrived < n:
        assert time.time() < deadline, "writers did not arrive"
        time.sleep(0.001)
    time.sleep(0.02)  # the last one is blocked on the lock by now


def two_in_one_batch(gc: GroupCommit, first: dict, second: dict) -> tuple[dict, dict]:
    """The first writer holds the lock inside its body until the second has asked for it, so
    both bodies land in one batch."""
    hold = threading.Event()
    a = run_in_thread(insert, gc, hold=hold, **first)
    wait_arrived(gc, 1)
    b = run_in_thread(insert, gc, **second)
    wait_arrived(gc, 2)
    hold.set()
    a["thread"].join(10)
    b["thread"].join(10)
    return a, b


def test_a_lone_writer_commits_at_once(db):
    path, gc = db
    for i in range(5):
        insert(gc, f"w{i}")
        assert rows(path) == sorted(f"w{j}" for j in range(i + 1))  # visible when it returns
    assert (gc.commits, gc.writes) == (5, 5)


def test_a_burst_shares_commits_and_loses_nothing(db):
    path, gc = db
    barrier = threading.Barrier(16)

    def writer(k: int) -> None:
        barrier.wait()
        for i in range(40):
            with gc.transaction() as conn:
                conn.execute("INSERT INTO child(parent_id, who) VALUES (1, ?)", (f"{k}-{i}",))
                time.sleep(0.0005)  # a body that takes a moment, as a request's does

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert rows(path) == sorted(f"{k}-{i}" for k in range(16) for i in range(40))
    assert gc.writes == 640 and gc.commits < gc.writes / 2  # batched


def test_a_failing_body_loses_only_its_own_changes(db):
    path, gc = db
    a, b = two_in_one_batch(gc, {"who": "a", "fail": True}, {"who": "b"})
    assert isinstance(a["error"], RuntimeError) and b.get("ok")
    assert rows(path) == ["b"] and gc.commits == 1
    # and the same when the failing one is the last of the batch (it commits for the other)
    a, b = two_in_one_batch(gc, {"who": "c"}, {"who": "d", "fail": True})
    assert a.get("ok") and isinstance(b["error"], RuntimeError)
    assert rows(path) == ["b", "c"]


def test_a_failing_commit_fails_every_writer_of_the_batch(db):
    path, gc = db
    # "bad" breaks a deferred foreign key: only COMMIT notices, for the whole batch
    a, b = two_in_one_batch(gc, {"who": "good"}, {"who": "bad", "parent": 99})
    assert isinstance(a["error"], sqlite3.IntegrityError)
    assert isinstance(b["error"], sqlite3.IntegrityError)
    assert rows(path) == []  # neither was acknowledged, neither is kept
    insert(gc, "after")  # and the next write works
    assert rows(path) == ["after"]


def test_store_writes_go_through_group_commit(tmp_path):
    from rlhfkit.collect.annotate.store import Store

    store = Store(tmp_path / "s.db")
    store.init()
    tokens = [store.add_annotator(f"a{i}") for i in range(3)]
    assert store._writes.commits == 3
    assert all(store.annotator_by_token(t) for t in tokens)
    store.close()
    assert store._writes._conn is None
    store.add_annotator("after-close")  # a new writers' connection opens
