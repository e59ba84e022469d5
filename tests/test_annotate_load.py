"""Load and crash test of the annotation server on loopback (a real uvicorn process).

1. 50 concurrent simulated annotators x 100 submissions each (GET /api/next, POST /api/rankings):
   throughput and p50/p99 latency, then nothing lost or duplicated and no item past its overlap.
2. The same load again, the server killed with SIGKILL in the middle; after a restart every
   submission that got a 201 is in the database, and the server goes on working.

Figures are printed and written to test-artifacts/annotate/load.json. Every loop is bounded in
count and time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfkit.annotate.store import Store

pytestmark = pytest.mark.slow

ANNOTATORS = 50
SUBMISSIONS = 100
OVERLAP = 2
K = 4
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "annotate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_db(tmp: Path, n_items: int) -> tuple[Path, list[str]]:
    cands = tmp / "c.jsonl"
    with open(cands, "w", encoding="utf-8") as f:
        for i in range(n_items):
            rs = [{"id": f"r{j}", "text": f"response {j} to prompt {i} " * 5} for j in range(K)]
            f.write(json.dumps({"prompt": f"prompt {i}", "responses": rs}) + "\n")
    db = tmp / "load.db"
    store = Store(db)
    store.init()
    store.import_candidates(cands)
    tokens = [store.add_annotator(f"sim{i:02d}") for i in range(ANNOTATORS)]
    return db, tokens


class Server:
    def __init__(self, db: Path, port: int, log: Path):
        self.db, self.port, self.log = db, port, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "RLHFKIT_ANNOTATE_SECRET": "x" * 40}
        cmd = [
            sys.executable,
            "-m",
            "rlhfkit",
            "annotate",
            "serve",
            "--db",
            str(self.db),
            "--port",
            str(self.port),
            "--overlap",
            str(OVERLAP),
            "--log-level",
            "warning",
        ]
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("server did not start within 60 s")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


async def request(client, method: str, path: str, stats: dict, **kw):
    """One request, retried (at most 3 times) when the connection drops, as a real client would."""
    import httpx

    for attempt in range(3):
        try:
            return await client.request(method, path, **kw), attempt
        except httpx.TransportError:
            if stats.get("stop") and stats["stop"].is_set():
                raise
            stats["retries"] = stats.get("retries", 0) + 1
            await asyncio.sleep(0.05)
    return await client.request(method, path, **kw), 3


async def annotator(
    client, token: str, n: int, acked: list, latencies: list, stop: asyncio.Event, stats: dict
) -> None:
    """One simulated person: fetch, rank (a tie now and then), submit; n times or until told to stop."""
    headers = {"Authorization": f"Bearer {token}"}
    for i in range(n):
        if stop.is_set():
            return
        t0 = time.perf_counter()
        r, _ = await request(client, "GET", "/api/next", stats, headers=headers)
        latencies.append(("next", time.perf_counter() - t0))
        if r.status_code == 204:
            return
        r.raise_for_status()
        item = r.json()
        ids = [x["id"] for x in item["responses"]]
        ranking = [ids[0], ids[1:3], *ids[3:]] if i % 5 == 0 else ids
        t0 = time.perf_counter()
        body = {"item_id": item["item_id"], "ranking": ranking}
        r, attempt = await request(
            client, "POST", "/api/rankings", stats, headers=headers, json=body
        )
        latencies.append(("submit", time.perf_counter() - t0))
        if r.status_code == 201:
            acked.append((token, item["item_id"], r.json()["id"]))
        elif r.status_code == 409 and attempt > 0:
            # the first attempt was recorded but its answer was lost with the connection
            stats["recorded_unacknowledged"] = stats.get("recorded_unacknowledged", 0) + 1
        else:
            raise AssertionError(f"submit got {r.status_code}: {r.text}")


async def run_load(
    port: int,
    tokens: list[str],
    n: int,
    acked: list,
    latencies: list,
    kill_after: int | None,
    on_kill,
    stats: dict,
) -> float:
    import httpx

    stop = asyncio.Event()
    stats["stop"] = stop
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits
    ) as client:
        t0 = time.perf_counter()
        tasks = [
            asyncio.create_task(annotator(client, t, n, acked, latencies, stop, stats))
            for t in tokens
        ]
        if kill_after is not None:
            while len(acked) < kill_after and not all(t.done() for t in tasks):
                await asyncio.sleep(0.01)
            on_kill()
            stop.set()
        results = await asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), timeout=600
        )
        elapsed = time.perf_counter() - t0
    if kill_after is None:
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]
    return elapsed


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def check_db(db: Path, acked: list, tokens: list[str]) -> dict:
    store = Store(db)
    with store.read() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(
            "SELECT r.id, r.item_id, n.token_hash FROM rankings r JOIN annotators n ON n.id = r.annotator_id"
        ).fetchall()
        over = conn.execute(
            "SELECT COUNT(*) FROM (SELECT item_id FROM assignments WHERE status IN ('assigned', 'submitted') "
            "GROUP BY item_id HAVING COUNT(*) > ?)",
            (OVERLAP,),
        ).fetchone()[0]
    from rlhfkit.annotate.store import hash_token

    in_db = {(r["token_hash"], r["item_id"], r["id"]) for r in rows}
    acked_keys = {(hash_token(t), item, rid) for t, item, rid in acked}
    assert len(acked_keys) == len(acked), "the server acknowledged the same submission twice"
    missing = acked_keys - in_db
    assert not missing, f"{len(missing)} acknowledged submissions are not in the database"
    assert over == 0, f"{over} items went past their overlap"
    return {"rankings_in_db": len(rows), "acknowledged": len(acked)}


def test_load_then_kill9_mid_load(tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    n_items = ANNOTATORS * SUBMISSIONS // OVERLAP  # exactly enough for everyone
    db, tokens = make_db(tmp_path, n_items + 200)
    port = free_port()
    server = Server(db, port, tmp_path / "server.log")
    server.start()
    try:
        # 1. full load
        acked: list = []
        lat: list = []
        stats: dict = {}
        elapsed = asyncio.run(run_load(port, tokens, SUBMISSIONS, acked, lat, None, None, stats))
        late = stats.get("recorded_unacknowledged", 0)
        assert len(acked) + late == ANNOTATORS * SUBMISSIONS
        counts = check_db(db, acked, tokens)
        assert counts["rankings_in_db"] == ANNOTATORS * SUBMISSIONS  # nothing lost, nothing extra
        submit = [t for kind, t in lat if kind == "submit"]
        nxt = [t for kind, t in lat if kind == "next"]
        figures = {
            "annotators": ANNOTATORS,
            "submissions_each": SUBMISSIONS,
            "overlap": OVERLAP,
            "submissions": len(acked),
            "seconds": round(elapsed, 2),
            "submissions_per_s": round(len(acked) / elapsed, 1),
            "requests_per_s": round(len(lat) / elapsed, 1),
            "submit_p50_ms": round(1000 * pct(submit, 0.5), 1),
            "submit_p99_ms": round(1000 * pct(submit, 0.99), 1),
            "next_p50_ms": round(1000 * pct(nxt, 0.5), 1),
            "next_p99_ms": round(1000 * pct(nxt, 0.99), 1),
            "client_retries": stats.get("retries", 0),
        }

        # 2. the same load on fresh annotators, killed mid-way
        store = Store(db)
        store.import_candidates(_more_items(tmp_path, n_items))
        tokens2 = [store.add_annotator(f"crash{i:02d}") for i in range(ANNOTATORS)]
        acked2: list = []
        lat2: list = []
        asyncio.run(run_load(port, tokens2, SUBMISSIONS, acked2, lat2, 1500, server.kill9, {}))
        assert server.proc.returncode == -signal.SIGKILL
        server.start()  # restart on the same database
        check_db(db, acked + acked2, tokens + tokens2)
        # and it keeps working: everyone can go on
        acked3: list = []
        asyncio.run(run_load(port, tokens2, 3, acked3, [], None, None, {}))
        assert len(acked3) == 3 * ANNOTATORS
        check_db(db, acked + acked2 + acked3, tokens + tokens2)
        figures["killed_after_acknowledged"] = len(acked2)
        figures["acknowledged_lost_after_kill9"] = 0
    finally:
        server.stop()
    print("\nload test:", json.dumps(figures, indent=2))
    (ARTIFACTS / "load.json").write_text(json.dumps(figures, indent=2) + "\n")
    # A loose floor: the machine may be busy with other work (13/s was measured at load average 12
    # on 2 cores), but a regression such as a checkpoint per request or a scan per assignment
    # drops far below it.
    assert figures["submissions_per_s"] > 5


def _more_items(tmp: Path, n: int) -> Path:
    path = tmp / "more.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rs = [{"id": f"r{j}", "text": f"second batch response {j} to {i}"} for j in range(K)]
            f.write(json.dumps({"prompt": f"second batch prompt {i}", "responses": rs}) + "\n")
    return path


def test_sqlite_file_is_wal(tmp_path):
    db, _ = make_db(tmp_path, 2)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
