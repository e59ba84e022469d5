"""A fully tied ranking (every response in one tie group) is legal data that holds no comparison.

Issue #20, finding 1: it used to stop every export, the API's export (500), ``--consensus`` of
opposite orders, ``data convert`` and ``train-rm``. Everywhere it is now counted, left out, said
so, and never fails the run. (``data convert`` / ``data stats``: tests/test_data.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rlhfkit.cli.annotate import main as annotate_main
from rlhfkit.collect.annotate.app import create_app
from rlhfkit.collect.annotate.store import Store
from test_annotate_api import SECRET, bearer, write_candidates


@pytest.fixture
def ranked(tmp_path):
    """Two items, K = 4, ranked by two annotators. Item 1: alice ties everything (what clicking
    "Tie with last" on every response submits), bob gives an order. Item 2: alice and bob give
    opposite orders, so their consensus is a four-way tie."""
    db = tmp_path / "ann.db"
    store = Store(db)
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", 2, k=4))
    tokens = {n: store.add_annotator(n) for n in ("alice", "bob")}
    tokens["root"] = store.add_annotator("root", is_admin=True)
    client = TestClient(create_app(db, overlap=2, secret=SECRET))
    wanted = {
        ("alice", 1): [["r1", "r3", "r0", "r2"]],
        ("bob", 1): ["r0", "r1", "r2", "r3"],
        ("alice", 2): ["r0", "r1", "r2", "r3"],
        ("bob", 2): ["r3", "r2", "r1", "r0"],
    }
    for who in ("alice", "bob"):
        for _ in range(2):
            item = client.get("/api/next", headers=bearer(tokens[who])).json()
            body = {"item_id": item["item_id"], "ranking": wanted[(who, item["item_id"])]}
            r = client.post("/api/rankings", headers=bearer(tokens[who]), json=body)
            assert r.status_code == 201, r.text
    return db, client, tokens


def export(db: Path, out: Path, *args: str) -> int:
    return annotate_main(["export", "--db", str(db), "--out", str(out), *args])


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_cli_export_leaves_out_fully_tied_rankings_and_says_so(ranked, tmp_path, capsys):
    db, _, _ = ranked
    assert export(db, tmp_path / "r.jsonl", "--format", "rankings") == 0
    out = capsys.readouterr().out
    assert "wrote 3 rankings" in out and "left out 1 fully tied ranking" in out
    recs = lines(tmp_path / "r.jsonl")
    assert len(recs) == 3 and all(len(r["ranking"]) == 4 for r in recs)

    assert export(db, tmp_path / "p.jsonl", "--format", "pairs") == 0
    out = capsys.readouterr().out
    assert "wrote 18 pairs" in out and "left out 1 fully tied ranking" in out
    assert len(lines(tmp_path / "p.jsonl")) == 18  # 3 rankings x 6 pairs


@pytest.mark.parametrize("method", ["ranked-pairs", "borda"])
def test_consensus_of_opposite_orders_is_left_out_not_an_error(ranked, tmp_path, capsys, method):
    db, _, _ = ranked
    args = ["--consensus", "--consensus-method", method, "--min-annotators", "2"]
    assert export(db, tmp_path / "c.jsonl", "--format", "pairs", *args) == 0
    out = capsys.readouterr().out
    # item 1's consensus (bob's order against alice's full tie) is bob's order: 6 pairs;
    # item 2's opposite orders cancel out into a four-way tie: no pair, left out
    assert "wrote 6 pairs" in out and "left out 1 fully tied ranking" in out
    assert export(db, tmp_path / "c.jsonl", "--format", "rankings", *args) == 0
    (rec,) = lines(tmp_path / "c.jsonl")
    assert rec["meta"]["item_id"] == 1 and rec["ranking"] == ["r0", "r1", "r2", "r3"]


def test_api_export_counts_fully_tied_rankings_in_a_header(ranked):
    _, client, tokens = ranked
    admin = bearer(tokens["root"])
    for query, rows in (
        ("format=pairs", 18),
        ("format=rankings", 3),
        ("format=pairs&consensus=ranked-pairs&min_annotators=2", 6),
        ("format=rankings&consensus=borda", 1),
    ):
        r = client.get(f"/api/export?{query}", headers=admin)
        assert r.status_code == 200, (query, r.text)
        assert len(r.text.splitlines()) == rows, query
        assert r.headers["x-fully-tied-left-out"] == "1", query


def test_train_rm_trains_past_a_fully_tied_record(tmp_path, capsys):
    """UltraFeedback-style data with one K = 4 record whose four responses are rated the same:
    train-rm runs (without --skip-invalid), leaves that record out and says so."""
    from rlhfkit.reward_training import RewardConfig, train_reward_model
    from rlhfkit.tiny import build_tiny_causal_lm

    def completion(text: str, rating: int) -> dict:
        return {"response": text, "annotations": {"helpfulness": {"Rating": str(rating)}}}

    rows = []
    for i in range(12):
        comps = [completion(f"good answer {i}", 5), completion(f"bad answer {i}", 1)]
        rows.append({"instruction": f"question {i}", "completions": comps})
    tied = [completion(f"answer {j}", 4) for j in range(4)]
    rows.insert(5, {"instruction": "question tied", "completions": tied})
    data = tmp_path / "uf.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    words = ["good", "bad", "answer", "question", "tied", *map(str, range(12))]
    lm = build_tiny_causal_lm(tmp_path / "lm", words, n_layer=1, n_embd=16)
    cfg = RewardConfig(
        model=str(lm), data=str(data), out=str(tmp_path / "rm"), epochs=1, batch_size=4,
        eval_split=0.25, progress=False,
    )  # fmt: skip
    results = train_reward_model(cfg)
    assert results["n_rankings"] > 0 and (tmp_path / "rm" / "eval.json").is_file()
    err = capsys.readouterr().err
    assert "read 12 records (ultrafeedback)" in err
    assert "left out 1 fully tied (every response tied: no ordered pair) (line 6)" in err
