"""`rlhfkit annotate serve` as a real process on 127.0.0.1: how it stops, what it leaves on disk,
what it refuses to start with (issue #20, findings 3 and 6)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rlhfkit.collect.annotate.store import Store
from test_annotate_api import write_candidates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_db(tmp: Path, n_items: int) -> tuple[Path, str]:
    db = tmp / "ann.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp / "c.jsonl", n_items))
    return db, store.add_annotator("ann")


def serve(db: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "RLHFKIT_ANNOTATE_SECRET": "x" * 40}
    cmd = [sys.executable, "-m", "rlhfkit", "annotate", "serve", "--db", str(db)]
    cmd += ["--port", str(port), "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start within 60 s")


def count_rankings(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT COUNT(*) FROM rankings").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_server_leaves_a_database_file_that_stands_alone(tmp_path, sig):
    """`systemctl stop` and `docker stop` send SIGTERM; uvicorn shuts down gracefully and then
    re-raises the signal, so a checkpoint placed after uvicorn.run() never ran and an ann.db
    copied alone held none of the acknowledged rankings (they were in the WAL)."""
    db, token = make_db(tmp_path, 10)
    port = free_port()
    proc = serve(db, port)
    try:
        h = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(10):
                item = client.get("/api/next", headers=h).json()
                ranking = [r["id"] for r in item["responses"]]
                body = {"item_id": item["item_id"], "ranking": ranking}
                assert client.post("/api/rankings", headers=h, json=body).status_code == 201
        wal = Path(str(db) + "-wal")
        assert wal.exists() and wal.stat().st_size > 0  # the rankings are in the WAL so far
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    alone = tmp_path / "copy"
    alone.mkdir()
    shutil.copy2(db, alone / "ann.db")  # the database file only: no -wal, no -shm
    assert count_rankings(alone / "ann.db") == 10


def test_database_wal_and_shm_are_created_private(tmp_path):
    old = os.umask(0o022)
    try:
        db, _ = make_db(tmp_path, 2)
    finally:
        os.umask(old)
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(db) + suffix)
        assert path.exists(), suffix
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (suffix, oct(path.stat().st_mode))


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--assignment-timeout", "-5", "assignment timeout must be positive"),
        ("--assignment-timeout", "nan", "assignment timeout must be positive"),
        ("--overlap", "0", "overlap must be at least 1"),
        ("--max-body-bytes", "0", "max body bytes must be at least 1024"),
    ],
)
def test_serve_refuses_bad_settings(tmp_path, flag, value, message):
    db, _ = make_db(tmp_path, 1)
    r = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "annotate", "serve", "--db", str(db), flag, value],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RLHFKIT_ANNOTATE_SECRET": "x" * 40},
    )
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
