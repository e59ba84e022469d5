"""Load and crash test of the annotation server on loopback (a real uvicorn process), with the
load generator of benchmarks/annotate_load.py (``python benchmarks/annotate_load.py`` runs the
same thing by hand and prints the figures).

1. 50 simulated annotators with a think time (each item read for 0.5–1.5 s, ten times faster than
   people): latency, and nothing lost or duplicated, no item past its overlap.
2. The stress test: 50 annotators with no think time, then the same load on new annotators with
   the server killed by SIGKILL in the middle; after a restart every submission that got a 201 is
   in the database, and the server goes on working.

Figures are printed and written to test-artifacts/annotate/load.json. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import annotate_load as load  # noqa: E402

pytestmark = pytest.mark.slow

ANNOTATORS = 50
OVERLAP = 2
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "annotate"


def _record(name: str, figures: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "load.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nload test, {name}:", json.dumps(figures, indent=2))


def _assert_intact(db: Path, run: load.Run) -> dict:
    checked = load.check_db(db, run.acked, OVERLAP)
    assert checked["integrity_ok"] and checked["lost"] == 0, checked
    assert checked["acknowledged_twice"] == 0 and checked["items_past_overlap"] == 0, checked
    return checked


def test_fifty_annotators_with_think_time(tmp_path):
    submissions = 12
    db, tokens = load.make_db(tmp_path, ANNOTATORS * submissions, ANNOTATORS)
    server = load.Server(db, OVERLAP, tmp_path / "server.log")
    server.start()
    before = load.load_average()
    try:
        run = asyncio.run(load.run_load(server.port, tokens, submissions, think_ms=1000))
    finally:
        server.stop()
    assert not run.errors, run.errors[:3]
    checked = _assert_intact(db, run)
    assert checked["rankings_in_db"] == len(run.acked) + run.recorded_unacknowledged
    assert len(run.acked) + run.recorded_unacknowledged == ANNOTATORS * submissions
    figures = {**load.figures(run), **checked, "think_ms": 1000, "load_average": before}
    _record("think_1000ms", figures)
    # The goal is p99 <= 50 ms (met on the author's shared machine: docs/annotation.md). This
    # bound only catches a regression such as the busy-handler back-off (p99 of seconds) coming
    # back; it leaves room for a CI machine busy with other jobs.
    assert figures["all_p99_ms"] < 500


def test_stress_then_kill9_mid_load(tmp_path):
    submissions = 60
    n_items = ANNOTATORS * submissions // OVERLAP
    db, tokens = load.make_db(tmp_path, n_items + 200, ANNOTATORS)
    server = load.Server(db, OVERLAP, tmp_path / "server.log")
    server.start()
    try:
        # 1. full speed: every annotator asks again the moment an answer arrives
        before = load.load_average()
        run = asyncio.run(load.run_load(server.port, tokens, submissions))
        assert not run.errors, run.errors[:3]
        assert len(run.acked) + run.recorded_unacknowledged == ANNOTATORS * submissions
        checked = _assert_intact(db, run)
        assert checked["rankings_in_db"] == ANNOTATORS * submissions  # nothing lost or extra
        figures = {**load.figures(run), **checked, "think_ms": 0, "load_average": before}

        # 2. the same load on fresh annotators and items, the server killed mid-way
        from rlhfkit.collect.annotate.store import Store

        store = Store(db)
        store.import_candidates(load.write_items(tmp_path / "more.jsonl", n_items, "second "))
        tokens2 = [store.add_annotator(f"crash{i:02d}") for i in range(ANNOTATORS)]
        store.close()
        crashed = asyncio.run(
            load.run_load(server.port, tokens2, submissions, kill_after=1500, on_kill=server.kill9)
        )
        assert server.proc.returncode == -signal.SIGKILL
        server.start()  # restart on the same database
        _assert_intact(db, _merged(run, crashed))
        # 3. and it keeps working: everyone can go on
        after = asyncio.run(load.run_load(server.port, tokens2, 3))
        assert not after.errors and len(after.acked) == 3 * ANNOTATORS
        _assert_intact(db, _merged(run, crashed, after))
        figures["killed_after_acknowledged"] = len(crashed.acked)
        figures["acknowledged_lost_after_kill9"] = 0
    finally:
        server.stop()
    _record("stress", figures)
    # A loose floor: the machine may be busy with other work, but a regression such as a
    # checkpoint per request or a scan per assignment drops far below it.
    assert figures["submissions_per_s"] > 20


def _merged(*runs: load.Run) -> load.Run:
    out = load.Run()
    for r in runs:
        out.acked += r.acked
    return out


def test_sqlite_file_is_wal(tmp_path):
    db, _ = load.make_db(tmp_path, 2, 1)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert os.path.getsize(db) > 0
