"""Load test of the annotation server on loopback: simulated annotators against a real
``rlhfkit annotate serve`` process. Prints latency (p50 / p99 / max), throughput and what was
lost, with the machine's load average.

    python benchmarks/annotate_load.py [--annotators 50] [--submissions 40] [--think-ms 1000]
        [--overlap 2] [--synchronous FULL] [--dir DIR] [--json FILE] [--server-arg=--flag ...]
        [--profile]

Each simulated annotator loops: ``GET /api/next``, think, ``POST /api/rankings`` (a tie now and
then), until it has made ``--submissions`` submissions. The think time is uniform in
[0.5, 1.5] × ``--think-ms``: a person needs several seconds to read K responses, so the default
(1 s) is already ten times faster than a real team. ``--think-ms 0`` is a stress test instead:
every annotator sends its next request the moment the last answer arrives, so the server is
always saturated and latency is the queue (Little's law: latency ≈ clients / throughput).

After the run the database is checked: every submission the server acknowledged (201) is there
once, no item went past its overlap, ``PRAGMA integrity_check`` is ok. ``lost`` counts
acknowledged submissions missing from the database; ``errors`` counts requests that failed.
``--profile`` samples the server with py-spy (``pip install py-spy``) during the run and prints
where its busy time went, by part of the stack. Only 127.0.0.1 is contacted.
``tests/test_annotate_load.py`` runs the same load (and a SIGKILL in the middle).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

K = 4
GOAL_P99_MS = 50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_items(path: Path, n: int, tag: str = "") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rs = [
                {"id": f"r{j}", "text": f"{tag}response {j} to prompt {i}. " * 5 + "`code`"}
                for j in range(K)
            ]
            f.write(json.dumps({"prompt": f"{tag}prompt {i}", "responses": rs}) + "\n")
    return path


def make_db(
    directory: Path, n_items: int, annotators: int, prefix: str = "sim"
) -> tuple[Path, list[str]]:
    """A database with ``n_items`` items of K responses and ``annotators`` annotators' tokens."""
    from rlhfkit.collect.annotate.store import Store

    db = directory / "load.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_items(directory / f"{prefix}-items.jsonl", n_items, prefix))
    tokens = [store.add_annotator(f"{prefix}{i:02d}") for i in range(annotators)]
    store.close()
    return db, tokens


class Server:
    """``rlhfkit annotate serve`` in a child process on a free loopback port."""

    def __init__(self, db: Path, overlap: int, log: Path, extra: list[str] | None = None):
        self.db, self.overlap, self.log, self.extra = db, overlap, log, extra or []
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "RLHFKIT_ANNOTATE_SECRET": "x" * 40}
        cmd = [
            sys.executable, "-m", "rlhfkit", "annotate", "serve", "--db", str(self.db),
            "--port", str(self.port), "--overlap", str(self.overlap), "--log-level", "warning",
            *self.extra,
        ]  # fmt: skip
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start within 60 s")

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


class Run:
    """What one load run saw: acknowledged submissions, latencies, retries, errors."""

    def __init__(self) -> None:
        self.acked: list[tuple[str, int, int]] = []  # (token, item_id, ranking id)
        self.latencies: list[tuple[str, float]] = []  # ("next" | "submit", seconds)
        self.retries = 0
        self.recorded_unacknowledged = 0
        self.errors: list[str] = []
        self.seconds = 0.0
        self.stop = asyncio.Event()


async def _request(session, run: Run, method: str, path: str, **kw):
    """One request, retried (at most 3 times) when the connection drops, as a real client would.
    Returns ``(status, body, attempt)``."""
    import aiohttp

    for attempt in range(4):
        try:
            async with session.request(method, path, **kw) as r:
                body = await r.read()
                return r.status, body, attempt
        except aiohttp.ClientConnectionError:
            if run.stop.is_set() or attempt == 3:
                raise
            run.retries += 1
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def _annotator(
    session, run: Run, token: str, n: int, think_s: float, rng: random.Random
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    # People do not all start at the same millisecond: each begins within the first think time.
    if think_s > 0:
        await asyncio.sleep(think_s * rng.random())
    for i in range(n):
        if run.stop.is_set():
            return
        t0 = time.perf_counter()
        status, body, _ = await _request(session, run, "GET", "/api/next", headers=headers)
        run.latencies.append(("next", time.perf_counter() - t0))
        if status == 204:
            return
        if status != 200:
            run.errors.append(f"next {status}: {body[:200]!r}")
            return
        item = json.loads(body)
        if think_s > 0:
            await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))
        ids = [x["id"] for x in item["responses"]]
        ranking = [ids[0], ids[1:3], *ids[3:]] if i % 5 == 0 else ids
        payload = {"item_id": item["item_id"], "ranking": ranking}
        t0 = time.perf_counter()
        status, body, attempt = await _request(
            session, run, "POST", "/api/rankings", headers=headers, json=payload
        )
        run.latencies.append(("submit", time.perf_counter() - t0))
        if status == 201:
            run.acked.append((token, item["item_id"], json.loads(body)["id"]))
        elif status == 409 and attempt > 0:
            # the first attempt was recorded but its answer was lost with the connection
            run.recorded_unacknowledged += 1
        else:
            run.errors.append(f"submit {status}: {body[:200]!r}")
            return


async def run_load(
    port: int,
    tokens: list[str],
    submissions: int,
    think_ms: float = 0.0,
    kill_after: int | None = None,
    on_kill=None,
    seed: int = 0,
) -> Run:
    """Every token annotates ``submissions`` items at once. With ``kill_after``, ``on_kill()`` is
    called once that many submissions are acknowledged, and the annotators stop.

    The client is aiohttp (its HTTP parser is C): a pure-Python client spent about three times
    the server's CPU per request here, and on a shared 2-core machine it measured itself."""
    import aiohttp

    run = Run()
    connector = aiohttp.TCPConnector(limit=len(tokens))
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{port}", connector=connector, timeout=timeout
    ) as session:
        t0 = time.perf_counter()
        tasks = [
            asyncio.create_task(
                _annotator(session, run, t, submissions, think_ms / 1000, random.Random(seed + i))
            )
            for i, t in enumerate(tokens)
        ]
        if kill_after is not None:
            while len(run.acked) < kill_after and not all(t.done() for t in tasks):
                await asyncio.sleep(0.01)
            on_kill()
            run.stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1800)
        run.seconds = time.perf_counter() - t0
    if kill_after is None:
        run.errors += [repr(r) for r in results if isinstance(r, BaseException)]
    return run


def check_db(db: Path, acked: list[tuple[str, int, int]], overlap: int) -> dict[str, int]:
    """Every acknowledged submission in the database once; nothing past its overlap; intact file."""
    import sqlite3

    from rlhfkit.collect.annotate.store import hash_token

    conn = sqlite3.connect(db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute(
            "SELECT r.id, r.item_id, n.token_hash FROM rankings r JOIN annotators n ON n.id = r.annotator_id"
        ).fetchall()
        over = conn.execute(
            "SELECT COUNT(*) FROM (SELECT item_id FROM assignments WHERE status IN ('assigned', "
            "'submitted') GROUP BY item_id HAVING COUNT(*) > ?)",
            (overlap,),
        ).fetchone()[0]
    finally:
        conn.close()
    in_db = {(h, item, rid) for rid, item, h in rows}
    acked_keys = {(hash_token(t), item, rid) for t, item, rid in acked}
    return {
        "rankings_in_db": len(rows),
        "acknowledged": len(acked),
        "acknowledged_twice": len(acked) - len(acked_keys),
        "lost": len(acked_keys - in_db),
        "items_past_overlap": over,
        "integrity_ok": int(integrity == "ok"),
    }


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


def figures(run: Run) -> dict[str, float]:
    """Latency percentiles in ms (per request kind and together) and throughput."""
    out: dict[str, float] = {
        "seconds": round(run.seconds, 2),
        "submissions": len(run.acked),
        "submissions_per_s": round(len(run.acked) / run.seconds, 1) if run.seconds else 0.0,
        "requests_per_s": round(len(run.latencies) / run.seconds, 1) if run.seconds else 0.0,
    }
    for kind in ("next", "submit", "all"):
        xs = [t for k, t in run.latencies if kind in ("all", k)]
        for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
            out[f"{kind}_{name}_ms"] = round(1000 * percentile(xs, q), 1)
    out["client_retries"] = run.retries
    out["errors"] = len(run.errors)
    return out


# Where the server's busy time goes: each sample goes to the first part one of whose keys is in
# its innermost three frames.
PROFILE_PARTS = [
    ("COMMIT (fsync of the WAL)", ("GroupCommit._commit",)),
    ("waiting for the writers' lock", ("Condition.__enter__",)),
    ("SQLite statements", ("Store.", "sqlite3", "GroupCommit")),
    ("Markdown rendering", ("markdown_it", "render_markdown")),
    ("handing requests to worker threads", ("anyio", "Queue.put", "Condition.notify", "concurrency")),
    ("FastAPI / Starlette / pydantic", ("fastapi", "starlette", "pydantic")),
    ("HTTP and sockets (uvicorn, httptools, event loop)", ("uvicorn", "httptools", "Runner.run", "asyncio")),
]  # fmt: skip


def profile_summary(raw: Path) -> list[tuple[str, float]]:
    """Share of the server's busy samples per part (``PROFILE_PARTS``), from py-spy's raw output
    (threads waiting for work or for their batch's COMMIT are idle, left out)."""
    from collections import Counter

    idle = ("EpollSelector.select", "Condition.wait", "Queue.get", "select (", "poll (")
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not stack or any(frames[-1].startswith(i) for i in idle):
            continue
        inner = frames[-3:]
        part = next(
            (name for name, keys in PROFILE_PARTS if any(k in f for f in inner for k in keys)),
            "other",
        )
        counts[part] += int(n)
    total = sum(counts.values()) or 1
    return [(part, round(100 * n / total, 1)) for part, n in counts.most_common()]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--annotators", type=int, default=50, help="simulated annotators, all at once")
    p.add_argument("--submissions", type=int, default=40, help="submissions per annotator")
    p.add_argument(
        "--think-ms", type=float, default=1000, help="mean think time per item (0: stress test)"
    )
    p.add_argument("--overlap", type=int, default=2, help="annotators per item")
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the database goes (default: a temporary directory)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra `annotate serve` argument (repeatable)",
    )
    p.add_argument(
        "--profile", action="store_true", help="sample the server with py-spy: where time went"
    )
    args = p.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="rlhfkit-load-", dir=args.dir))
    n_items = args.annotators * args.submissions // args.overlap + args.annotators
    db, tokens = make_db(workdir, n_items, args.annotators)
    server = Server(db, args.overlap, workdir / "server.log",
                    ["--synchronous", args.synchronous, *args.server_arg])  # fmt: skip
    load_before = load_average()
    server.start()
    spy = None
    if args.profile:
        spy = subprocess.Popen(
            ["py-spy", "record", "-p", str(server.proc.pid), "-o", str(workdir / "profile.txt"),
             "-f", "raw", "-r", "250", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # let py-spy attach
    try:
        run = asyncio.run(run_load(server.port, tokens, args.submissions, args.think_ms))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        server.stop()
    result = {
        "annotators": args.annotators,
        "submissions_each": args.submissions,
        "think_ms": args.think_ms,
        "overlap": args.overlap,
        "synchronous": args.synchronous,
        **figures(run),
        **check_db(db, run.acked, args.overlap),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "database": str(db),
    }
    result["goal_p99_50ms"] = "met" if result["all_p99_ms"] <= GOAL_P99_MS else "NOT met"
    commits = [x for x in server.log.read_text().splitlines() if "per commit" in x]
    result["group_commit"] = commits[-1].split(": ", 1)[-1] if commits else None
    print(
        f"{args.annotators} annotators x {args.submissions} submissions, think {args.think_ms:g} ms, "
        f"overlap {args.overlap}, synchronous={args.synchronous}; load average before "
        f"{load_before}, after {result['load_average_after']}"
    )
    for kind in ("next", "submit", "all"):
        print(
            f"  {kind:<7} p50 {result[f'{kind}_p50_ms']:>8.1f} ms   p99 {result[f'{kind}_p99_ms']:>8.1f} ms"
            f"   max {result[f'{kind}_max_ms']:>8.1f} ms"
        )
    print(
        f"  throughput {result['submissions_per_s']} submissions/s ({result['requests_per_s']} "
        f"requests/s) over {result['seconds']} s"
    )
    print(
        f"  acknowledged {result['acknowledged']}, in the database {result['rankings_in_db']}, "
        f"lost {result['lost']}, acknowledged twice {result['acknowledged_twice']}, items past "
        f"overlap {result['items_past_overlap']}, errors {result['errors']}, client retries "
        f"{result['client_retries']}, integrity {'ok' if result['integrity_ok'] else 'FAILED'}"
    )
    print(f"  server: {result['group_commit']}")
    print(f"  goal p99 <= {GOAL_P99_MS:g} ms: {result['goal_p99_50ms']}")
    for e in run.errors[:5]:
        print(f"  error: {e}")
    if args.profile and (workdir / "profile.txt").exists():
        result["profile"] = profile_summary(workdir / "profile.txt")
        print("  where the server's busy time went (py-spy samples; idle threads left out):")
        for part, share in result["profile"]:
            print(f"    {share:5.1f}%  {part}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    ok = result["lost"] == 0 and not run.errors and result["integrity_ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
