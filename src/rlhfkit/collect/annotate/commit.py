"""Group commit: the write transactions of one process share one COMMIT (one fsync) per burst.

With ``synchronous=FULL`` every COMMIT waits for an fsync of the WAL, and SQLite has one writer at
a time, so under a burst of requests each writer queued behind the previous one's fsync. Here the
writers of a process share one connection and one open transaction. Each writer runs its body as a
SAVEPOINT inside it, under a lock, then waits; the last writer of a burst (no other writer has
asked for the lock meanwhile), or the one that fills the batch, COMMITs for everyone and wakes
them. Every writer returns only after the COMMIT that holds its changes, so an acknowledged write
is exactly as durable as before; a writer alone commits at once, as before.

Failure: a body that raises rolls back its own savepoint only; a COMMIT that fails rolls back the
whole batch and every writer in it gets the error (none of them has been acknowledged). Writers
in one batch see each other's changes in order, as if they had committed one by one; readers on
other connections see a batch when it is committed, before any of its writers returns.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator


class GroupCommit:
    """Serializes a process's write transactions on one connection and batches their COMMITs."""

    def __init__(self, open_connection: Callable[[], sqlite3.Connection], max_batch: int = 64):
        self._open = open_connection
        self._conn: sqlite3.Connection | None = None
        self._cond = threading.Condition(threading.Lock())
        self._arrived_lock = threading.Lock()
        self._arrived = 0  # writers that asked for the lock and have not finished their body
        self._batch = 0  # number of the open (or last) batch
        self._size = 0  # bodies in the open batch
        self._in_transaction = False
        self._done = 0  # the last batch committed (or failed)
        self._failed: dict[int, BaseException] = {}
        self.max_batch = max_batch
        self.commits = 0  # statistics: writes / commits is the mean batch size
        self.writes = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction's body; returns once its changes are committed (or raises)."""
        with self._arrived_lock:
            self._arrived += 1
        with self._cond:
            try:
                if self._conn is None:
                    self._conn = self._open()
                if not self._in_transaction:
                    self._conn.execute("BEGIN IMMEDIATE")  # waits for other processes' writers
                    self._in_transaction, self._size = True, 0
                    self._batch += 1
            except BaseException:
                self._leave()
                raise
            batch, conn = self._batch, self._conn
            conn.execute("SAVEPOINT write")
            try:
                yield conn
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO write")
                    conn.execute("RELEASE write")
                else:  # SQLite rolled the whole transaction back (I/O error, full disk)
                    self._end_batch(e)
                self._finish(batch, wait=False)
                raise
            conn.execute("RELEASE write")
            self._finish(batch, wait=True)

    def _leave(self) -> int:
        with self._arrived_lock:
            self._arrived -= 1
            return self._arrived

    def _finish(self, batch: int, wait: bool) -> None:
        """After a body (lock held): commit if nobody else is coming, else wait for whoever does."""
        self._size += 1
        others = self._leave()
        open_batch = self._in_transaction and self._batch == batch
        if open_batch and (others == 0 or self._size >= self.max_batch):
            self._commit()
        elif wait:
            while self._done < batch:
                self._cond.wait()  # releases the lock: the next writer runs its body meanwhile
        if wait and batch in self._failed:
            raise self._failed[batch]

    def _commit(self) -> None:
        assert self._conn is not None
        try:
            self._conn.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            self._end_batch(e)
        else:
            self._end_batch(None)

    def _end_batch(self, error: BaseException | None) -> None:
        """The open batch is over: committed, or lost with ``error``; wake its writers."""
        if error is not None:
            self._failed[self._batch] = error
        for old in [b for b in self._failed if b < self._batch - 1000]:
            del self._failed[old]
        self._in_transaction = False
        self._done = self._batch
        self.commits += error is None
        self.writes += self._size if error is None else 0
        self._cond.notify_all()

    def close(self) -> None:
        """Close the connection once no batch is open (a later write opens a new one)."""
        with self._cond:
            while self._in_transaction:
                self._cond.wait()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
