"""Quality control of the annotation app: Kendall's τ-b and W, reliability against a leave-one-out
consensus and against gold, gold items in the store / CLI / API, and reliability in the export."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.collect.annotate.agreement import average_ranks, krippendorff_alpha, ranking_units
from rlhfkit.collect.annotate.quality import (
    annotator_quality,
    item_disagreement,
    kendall_tau_b,
    kendall_w,
    quality_report,
    reference_taus,
)
from rlhfkit.collect.annotate.store import InvalidRanking, NotFound, Store, read_gold
from rlhfkit.errors import DataError
from test_annotate_api import SECRET, bearer, write_candidates

# ---- random rankings with ties -------------------------------------------------------------------


@st.composite
def rankings_of(draw, ids):
    """A ranking of ``ids`` with random tie groups: shuffle, then cut into consecutive groups."""
    order = draw(st.permutations(ids))
    cuts = draw(st.lists(st.booleans(), min_size=len(ids) - 1, max_size=len(ids) - 1))
    out, group = [], [order[0]]
    for rid, cut in zip(order[1:], cuts, strict=True):
        if cut:
            out.append(group)
            group = [rid]
        else:
            group.append(rid)
    out.append(group)
    return [g[0] if len(g) == 1 else g for g in out]


IDS = ["a", "b", "c", "d", "e"]


def rank_vector(ranking, ids):
    ranks = average_ranks(ranking)
    return [ranks[i] for i in ids]


# ---- Kendall's τ-b -------------------------------------------------------------------------------


def test_tau_b_hand_computed():
    assert kendall_tau_b(["a", "b", "c", "d"], ["a", "b", "c", "d"]) == 1.0
    assert kendall_tau_b(["a", "b", "c", "d"], ["d", "c", "b", "a"]) == -1.0
    # one swap of neighbours: 5 concordant, 1 discordant of 6 pairs
    assert kendall_tau_b(["a", "b", "c", "d"], ["a", "c", "b", "d"]) == pytest.approx(4 / 6)
    # a tie on one side: (b, c) tied in the first only -> n_c = 5, n_d = 0, n_1 = 1, n_2 = 0;
    # τ_b = 5 / √((6 − 1)(6 − 0)) = 5/√30
    assert kendall_tau_b(["a", ["b", "c"], "d"], ["a", "b", "c", "d"]) == pytest.approx(5 / 30**0.5)
    # everything tied on one side: undefined
    assert kendall_tau_b([["a", "b", "c"]], ["a", "b", "c"]) is None
    # only the shared ids count
    assert kendall_tau_b(["a", "b", "x"], ["b", "a", "y"]) == -1.0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_tau_b_equals_scipy(data):
    from scipy.stats import kendalltau

    a = data.draw(rankings_of(IDS))
    b = data.draw(rankings_of(IDS))
    ours = kendall_tau_b(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant input, and returns nan
        theirs = kendalltau(rank_vector(a, IDS), rank_vector(b, IDS), variant="b").statistic
    if ours is None:
        assert theirs != theirs  # nan
    else:
        assert ours == pytest.approx(theirs, abs=1e-12)


# ---- Kendall's W ---------------------------------------------------------------------------------


def test_kendall_w_hand_computed_with_ties():
    # Three annotators, four responses; the third ties a and b.
    r1 = ["a", "b", "c", "d"]  # 1 2 3 4
    r2 = ["a", "c", "b", "d"]  # 1 3 2 4
    r3 = [["a", "b"], "c", "d"]  # 1.5 1.5 3 4
    # rank sums: a 1 + 1 + 1.5 = 3.5, b 2 + 3 + 1.5 = 6.5, c 3 + 2 + 3 = 8, d 12; their mean is
    # m(n+1)/2 = 7.5, so S = 16 + 1 + 0.25 + 20.25 = 37.5. T = 2³ − 2 = 6 for the third annotator:
    # W = 12·37.5 / (9·(64 − 4) − 3·6) = 450 / 522
    assert kendall_w([r1, r2, r3]) == pytest.approx(450 / 522)
    assert kendall_w([r1, r1, r1]) == pytest.approx(1.0)
    assert kendall_w([r1, list(reversed(r1))]) == pytest.approx(0.0)
    assert kendall_w([r1]) is None
    assert kendall_w([[["a", "b"]], [["a", "b"]]]) is None  # all tied: nothing to agree on


@settings(max_examples=120, deadline=None)
@given(st.data(), st.integers(2, 5), st.integers(3, 5))
def test_kendall_w_equals_friedman_statistic(data, m, n):
    """W = χ²_F / (m(n − 1)) with Friedman's tie-corrected χ² (scipy), an independent oracle."""
    from scipy.stats import friedmanchisquare

    ids = IDS[:n]
    rankings = [data.draw(rankings_of(ids)) for _ in range(m)]
    ours = kendall_w(rankings)
    vectors = [rank_vector(r, ids) for r in rankings]  # m annotators x n responses
    samples = [[v[i] for v in vectors] for i in range(n)]  # one sample per response
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            chi2 = friedmanchisquare(*samples).statistic
        except (ValueError, ZeroDivisionError):
            chi2 = float("nan")
    if ours is None:
        assert chi2 != chi2 or not (chi2 < float("inf"))
    else:
        assert ours == pytest.approx(chi2 / (m * (n - 1)), abs=1e-9)


# ---- Krippendorff's α (ordinal), against an independent implementation ----------------------------


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(2, 4), st.integers(2, 6))
def test_alpha_ordinal_over_ranks_equals_the_krippendorff_package(data, coders, n_items):
    """Our α over rank units vs the PyPI ``krippendorff`` package (Castro 2017) on the same
    reliability matrix (coders x (item, response) units, missing where a coder skipped an item)."""
    krippendorff = pytest.importorskip("krippendorff")

    ids = IDS[:4]
    items = []  # per item, the rankings of the coders who ranked it (None: did not)
    for _ in range(n_items):
        present = data.draw(st.lists(st.booleans(), min_size=coders, max_size=coders))
        items.append([data.draw(rankings_of(ids)) if p else None for p in present])
    units = ranking_units([[r for r in it if r is not None] for it in items])
    matrix = np.full((coders, n_items * len(ids)), np.nan)
    for i, it in enumerate(items):
        for c, r in enumerate(it):
            if r is not None:
                matrix[c, i * len(ids) : (i + 1) * len(ids)] = rank_vector(r, sorted(ids))
    ours = krippendorff_alpha(units, "ordinal")
    pairable = [v for u in units if len(u) >= 2 for v in u]
    if ours is None:
        assert len(set(pairable)) < 2
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
    assert ours == pytest.approx(theirs, abs=1e-9)


# ---- reliability: leave-one-out consensus and gold ---------------------------------------------


def item(item_id, *rankings, prompt=None):
    return {
        "item_id": item_id,
        "prompt": prompt or f"prompt {item_id}",
        "rankings": [{"annotator": who, "ranking": r} for who, r in rankings],
    }


ITEMS = [
    # item 1: A and B agree, C swaps b and c
    item(1, ("A", ["a", "b", "c"]), ("B", ["a", "b", "c"]), ("C", ["a", "c", "b"])),
    # item 2 is gold (x > y > z): A matches it exactly, C reverses it
    item(2, ("A", ["x", "y", "z"]), ("C", ["z", "y", "x"])),
    # item 3: only B, no gold: no reference
    item(3, ("B", ["p", "q"])),
]
GOLD = {2: ["x", "y", "z"]}


def test_leave_one_out_reference_hand_computed():
    taus = {(who, it, kind): t for who, it, kind, t in reference_taus(ITEMS, GOLD)}
    # A on item 1 vs the consensus of B and C: a first for both, b vs c split -> [a, [b, c]];
    # τ_b(abc, a[bc]) = 2 / √(3 · 2)
    assert taus[("A", 1, "others")] == pytest.approx(2 / 6**0.5)
    assert taus[("B", 1, "others")] == pytest.approx(2 / 6**0.5)
    # C vs the consensus of A and B (= a b c): one discordant pair of three
    assert taus[("C", 1, "others")] == pytest.approx(1 / 3)
    assert taus[("A", 2, "gold")] == 1.0 and taus[("C", 2, "gold")] == -1.0
    assert not any(it == 3 for _, it, _ in taus)  # nothing to compare with


def test_annotator_quality_hand_computed():
    q = annotator_quality(ITEMS, GOLD)
    t = 2 / 6**0.5
    # A and C ranked the gold item: their reliability is their agreement with gold
    assert (q["A"]["reliability"], q["A"]["reliability_from"], q["A"]["compared"]) == (
        1.0,
        "gold",
        1,
    )
    assert q["A"]["tau_vs_others"] == pytest.approx(round(t, 4))
    assert (q["A"]["gold_tau"], q["A"]["gold_items"], q["A"]["gold_exact"]) == (1.0, 1, 1)
    assert (q["C"]["reliability"], q["C"]["gold_tau"], q["C"]["gold_exact"]) == (-1.0, -1.0, 0)
    assert q["C"]["tau_vs_others"] == pytest.approx(round(1 / 3, 4))
    # B saw no gold: agreement with the others, on item 1 only (item 3 had no reference)
    assert q["B"]["reliability"] == pytest.approx(round(t, 4))
    assert (q["B"]["reliability_from"], q["B"]["compared"]) == ("others", 1)
    assert q["B"]["gold_tau"] is None
    # a fully tied ranking carries no order: it is left out, not counted as 0
    tied = [item(1, ("D", [["a", "b", "c"]]), ("E", ["a", "b", "c"]))]
    assert annotator_quality(tied, {})["D"]["reliability"] is None


def test_loo_reliability_equals_a_plain_loop():
    """reference_taus against a loop that builds each consensus from scratch (no shared state)."""
    from rlhfkit.collect.annotate.agreement import ranked_pairs

    rng = random.Random(0)
    items = []
    for i in range(30):
        who = rng.sample(["A", "B", "C", "D"], rng.randint(1, 4))
        rs = []
        for w in who:
            ids = ["a", "b", "c", "d"]
            rng.shuffle(ids)
            rs.append((w, ids if rng.random() < 0.8 else [ids[:2], *ids[2:]]))
        items.append(item(i + 1, *rs))
    expected = []
    for it in items:
        for r in it["rankings"]:
            others = [o["ranking"] for o in it["rankings"] if o is not r]
            if not others:
                continue
            tau = kendall_tau_b(r["ranking"], ranked_pairs(others))
            if tau is not None:
                expected.append((r["annotator"], it["item_id"], "others", tau))
    assert reference_taus(items, {}) == expected


def test_item_disagreement_and_report():
    per_item = item_disagreement(ITEMS)
    assert [d["item_id"] for d in per_item] == [2, 1]  # reversed item first; item 3 has one ranking
    assert per_item[0]["disagreement"] == 1.0 and per_item[0]["mean_tau"] == -1.0
    rep = quality_report(ITEMS, GOLD)
    assert rep["gold_items"] == 1 and rep["gold_rankings"] == 2
    assert rep["kendall_w_items"] == 2
    assert rep["kendall_w_mean"] == pytest.approx(
        round((0 + kendall_w([list("abc"), list("abc"), list("acb")])) / 2, 4)
    )


# ---- gold items in the store ---------------------------------------------------------------------


def make_store(tmp_path: Path, n_items: int = 4, k: int = 3) -> Store:
    store = Store(tmp_path / "ann.db")
    store.init()
    store.import_candidates(write_candidates(tmp_path / "c.jsonl", n_items, k))
    return store


def test_gold_set_replace_remove_and_validation(tmp_path):
    store = make_store(tmp_path)
    assert store.set_gold(2, ["r1", ["r0", "r2"]], note="r1 is the only correct one") == [
        "r1",
        ["r0", "r2"],
    ]
    assert store.gold() == {2: ["r1", ["r0", "r2"]]}
    store.set_gold(2, ["r0", "r1", "r2"])  # replaces
    assert store.gold() == {2: ["r0", "r1", "r2"]}
    (row,) = store.gold_items()
    assert (row["item_id"], row["rankings"], row["note"]) == (2, 0, None)
    with pytest.raises(NotFound, match="no item 99"):
        store.set_gold(99, ["r0", "r1", "r2"])
    with pytest.raises(InvalidRanking, match="missing: r2"):
        store.set_gold(1, ["r0", "r1"])
    with pytest.raises(InvalidRanking, match="tie them all"):
        store.set_gold(1, [["r0", "r1", "r2"]])
    assert store.remove_gold(2) and not store.remove_gold(2)
    assert store.gold() == {}


def test_gold_file_by_id_and_by_content_is_all_or_nothing(tmp_path):
    store = make_store(tmp_path)
    ok = tmp_path / "gold.jsonl"
    native = {
        "prompt": "question 3?",
        "responses": [{"id": f"r{j}", "text": f"answer {j} to question 3"} for j in range(3)],
        "ranking": ["r2", "r1", "r0"],
    }
    ok.write_text(
        json.dumps({"item_id": 1, "ranking": ["r0", ["r1", "r2"]], "note": "n"})
        + "\n"
        + json.dumps(native)
        + "\n",
        encoding="utf-8",
    )
    store.set_gold_records(read_gold(ok))
    assert store.gold() == {1: ["r0", ["r1", "r2"]], 4: ["r2", "r1", "r0"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"item_id": 2, "ranking": ["r0", "r1", "r2"]})
        + "\n"
        + json.dumps({"item_id": 3, "ranking": ["r0", "r1", "zz"]})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidRanking, match=rf"^{bad}:2: .*not responses of this item: zz"):
        store.set_gold_records(read_gold(bad))
    assert 2 not in store.gold()  # nothing of the file was written
    bad.write_text(json.dumps({"item_id": "seven", "ranking": []}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: 'item_id' must be a positive integer"):
        read_gold(bad)
    other = dict(native, prompt="a prompt never imported")
    bad.write_text(json.dumps(other) + "\n", encoding="utf-8")
    with pytest.raises(
        NotFound, match=r"bad\.jsonl:1: no item with this prompt and these responses"
    ):
        store.set_gold_records(read_gold(bad))


def test_gold_items_go_to_every_annotator_whatever_the_overlap(tmp_path):
    store = make_store(tmp_path, n_items=3)
    store.set_gold(3, ["r0", "r1", "r2"])
    ids = [store.annotator_by_token(store.add_annotator(f"a{i}")).id for i in range(4)]
    got: dict[int, list[int]] = {a: [] for a in ids}
    for a in ids:
        while (it := store.next_item(a, overlap=1)) is not None:
            got[a].append(it["item_id"])
            store.submit_ranking(a, it["item_id"], [r["id"] for r in it["responses"]])
    assert all(3 in items for items in got.values())  # the gold item reached everyone
    others = [i for items in got.values() for i in items if i != 3]
    assert sorted(others) == [1, 2]  # the other items kept overlap 1
    assert store.progress(ids[0], overlap=1)["remaining"] == 0


def test_schema_migration_adds_gold_to_an_existing_database(tmp_path):
    """A database written before gold existed (version 1, or version 2 from before this table)
    keeps its data and gains the table on the next start of any command that opens it."""
    store = make_store(tmp_path)
    aid = store.annotator_by_token(store.add_annotator("old")).id
    it = store.next_item(aid, overlap=1)
    store.submit_ranking(aid, it["item_id"], ["r0", "r1", "r2"])
    store.close()
    conn = sqlite3.connect(tmp_path / "ann.db")
    conn.execute("DROP TABLE gold")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = Store(tmp_path / "ann.db").counts()
    r = run_cli("annotate", "gold", "--db", str(tmp_path / "ann.db"), "--list")
    assert r.returncode == 0 and "no gold items" in r.stdout
    fresh = Store(tmp_path / "ann.db")
    assert fresh.counts() == before and fresh.gold() == {}
    with fresh.read() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert fresh.get_meta("schema_version") == "3"
    fresh.set_gold(1, ["r2", "r1", "r0"])  # and it works
    assert fresh.gold() == {1: ["r2", "r1", "r0"]}


# ---- CLI: gold, stats, export ------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlhfkit", *args], capture_output=True, text=True, timeout=300
    )


def rank_all(store: Store, rankers: dict[str, object], overlap: int) -> None:
    """Each annotator takes items until none is left; ``rankers[name](item)`` gives the ranking."""
    for name, how in rankers.items():
        aid = store.annotator_by_token(store.add_annotator(name)).id
        while (it := store.next_item(aid, overlap)) is not None:
            store.submit_ranking(aid, it["item_id"], how(it))


def truthful(it):
    return sorted(r["id"] for r in it["responses"])  # r0 > r1 > r2


def contrarian(it):
    return sorted((r["id"] for r in it["responses"]), reverse=True)


def test_cli_gold_stats_and_reliable_export(tmp_path):
    store = make_store(tmp_path, n_items=6)
    db = str(tmp_path / "ann.db")
    r = run_cli("annotate", "gold", "--db", db, "--item", "1", "--ranking", '["r0", "r1", "r2"]')
    assert r.returncode == 0 and 'item 1 is gold: ["r0", "r1", "r2"]' in r.stdout
    r = run_cli("annotate", "gold", "--db", db, "--item", "2", "--ranking", '["r0", "r1"]')
    assert r.returncode == 2 and "missing: r2" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("annotate", "gold", "--db", db, "--item", "2", "--ranking", "r0 > r1")
    assert r.returncode == 2 and "--ranking is not valid JSON" in r.stderr
    r = run_cli("annotate", "gold", "--db", db)
    assert r.returncode == 2 and "give one of" in r.stderr
    rank_all(store, {"ann": truthful, "bea": truthful, "cyd": contrarian}, overlap=3)

    r = run_cli("annotate", "stats", "--db", db, "--json")
    q = json.loads(r.stdout)["quality"]
    assert q["gold_items"] == 1 and q["gold_rankings"] == 3
    assert q["annotators"]["ann"]["gold_tau"] == 1.0 and q["annotators"]["cyd"]["gold_tau"] == -1.0
    assert q["annotators"]["cyd"]["reliability"] == -1.0
    text = run_cli("annotate", "stats", "--db", db).stdout
    assert "reliability" in text and "gold tau" in text and "cyd" in text

    out = tmp_path / "r.jsonl"
    r = run_cli("annotate", "export", "--db", db, "--out", str(out), "--min-reliability", "0.5")
    assert r.returncode == 0, r.stderr
    assert "left out 6 rankings of cyd: reliability -1.000" in r.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 12 and {x["annotator"] for x in recs} == {"ann", "bea"}
    r = run_cli("annotate", "export", "--db", db, "--out", str(out), "--weight-by-reliability")
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert {(x["annotator"], x["weight"]) for x in recs} == {
        ("ann", 1.0),
        ("bea", 1.0),
        ("cyd", 0.0),
    }
    pairs = tmp_path / "p.jsonl"
    run_cli("annotate", "export", "--db", db, "--out", str(pairs), "--format", "pairs",
            "--weight-by-reliability")  # fmt: skip
    assert {json.loads(x)["weight"] for x in pairs.read_text().splitlines()} == {0.0, 1.0}
    # consensus after leaving cyd out: the truthful order on every item
    r = run_cli("annotate", "export", "--db", db, "--out", str(out), "--consensus",
                "--min-reliability", "0")  # fmt: skip
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 6 and all(x["ranking"] == ["r0", "r1", "r2"] for x in recs)
    r = run_cli("annotate", "export", "--db", db, "--out", str(out), "--consensus",
                "--weight-by-reliability")  # fmt: skip
    assert r.returncode == 2 and "a consensus record has no single annotator" in r.stderr


def test_unknown_reliability_is_left_out_and_said(tmp_path):
    store = make_store(tmp_path, n_items=2)
    rank_all(store, {"solo": truthful}, overlap=1)  # nobody to compare with, no gold
    db, out = str(tmp_path / "ann.db"), tmp_path / "r.jsonl"
    r = run_cli("annotate", "export", "--db", db, "--out", str(out), "--weight-by-reliability")
    assert r.returncode == 2 and "nothing to export" in r.stderr
    assert "left out 2 rankings of solo: unknown reliability" in r.stderr
    assert not out.exists()


# ---- HTTP API: gold routes, stats, export, Markdown, guidelines -----------------------------------


@pytest.fixture
def api(tmp_path):
    from fastapi.testclient import TestClient

    from rlhfkit.collect.annotate.app import create_app

    store = make_store(tmp_path)
    tokens = {
        "ann": store.add_annotator("ann"),
        "cyd": store.add_annotator("cyd"),
        "admin": store.add_annotator("boss", is_admin=True),
    }
    guide = tmp_path / "guide.md"
    guide.write_text("# Rank by *accuracy*\n\n<script>window.x = 1</script>\n", encoding="utf-8")
    app = create_app(tmp_path / "ann.db", overlap=2, secret=SECRET, guidelines=guide)
    return TestClient(app, follow_redirects=False), tokens, store, guide


GOLD_ROUTES = [
    ("GET", "/api/gold", None, 200),
    ("PUT", "/api/gold/1", {"ranking": ["r0", "r1", "r2"]}, 200),
    ("DELETE", "/api/gold/2", None, 204),
    ("GET", "/api/items/1", None, 200),
]


@pytest.mark.parametrize("method, path, body, ok", GOLD_ROUTES)
@pytest.mark.parametrize("role", ["none", "ann", "admin", "admin-cookie-no-csrf"])
def test_gold_routes_are_for_admins(api, method, path, body, ok, role):
    client, tokens, store, _ = api
    store.set_gold(2, ["r2", "r1", "r0"])
    headers = {}
    if role == "admin-cookie-no-csrf":
        assert client.post("/api/login", json={"token": tokens["admin"]}).status_code == 200
    elif role != "none":
        headers = bearer(tokens[role])
    r = client.request(method, path, headers=headers, json=body)
    expected = {"none": 401, "ann": 403, "admin": ok}.get(role)
    if role == "admin-cookie-no-csrf":  # reads pass, writes need the CSRF header
        expected = ok if method == "GET" else 403
    assert r.status_code == expected, r.text


def test_gold_api_round_trip_and_errors(api):
    client, tokens, _, _ = api
    h = bearer(tokens["admin"])
    r = client.put("/api/gold/3", headers=h, json={"ranking": ["r2", ["r0", "r1"]], "note": "x"})
    assert r.status_code == 200 and r.json() == {"item_id": 3, "ranking": ["r2", ["r0", "r1"]]}
    assert client.get("/api/items/3", headers=h).json()["gold"] == ["r2", ["r0", "r1"]]
    (g,) = client.get("/api/gold", headers=h).json()
    assert (g["item_id"], g["note"], g["prompt"]) == (3, "x", "question 2?")
    assert client.put("/api/gold/99", headers=h, json={"ranking": ["r0"]}).status_code == 404
    r = client.put("/api/gold/1", headers=h, json={"ranking": ["r0", "r1"]})
    assert r.status_code == 422 and "missing: r2" in str(r.json()["detail"])
    assert client.put("/api/gold/1", headers=h, json={"ranking": "r0"}).status_code == 422
    assert client.put(f"/api/gold/{10**30}", headers=h, json={"ranking": ["r0"]}).status_code == 422
    assert client.get("/api/items/0", headers=h).status_code == 422
    assert client.delete("/api/gold/3", headers=h).status_code == 204
    assert client.delete("/api/gold/3", headers=h).status_code == 404


def test_stats_show_gold_feedback_and_export_applies_reliability(api):
    client, tokens, store, _ = api
    store.set_gold(1, ["r0", "r1", "r2"])
    for name, how in (("ann", truthful), ("cyd", contrarian)):
        h = bearer(tokens[name])
        while (r := client.get("/api/next", headers=h)).status_code == 200:
            it = r.json()
            body = {"item_id": it["item_id"], "ranking": how(it)}
            assert client.post("/api/rankings", headers=h, json=body).status_code == 201
    admin = bearer(tokens["admin"])
    q = client.get("/api/stats", headers=admin).json()["quality"]
    assert q["gold"] == [{"item_id": 1, "taus": {"ann": 1.0, "cyd": -1.0}, "mean_tau": 0.0}]
    assert q["annotators"]["cyd"]["reliability"] == -1.0
    assert q["most_disagreed"][0]["disagreement"] == 1.0
    lines = client.get(
        "/api/export?format=rankings&weight_by_reliability=true", headers=admin
    ).text.splitlines()
    assert {(json.loads(x)["annotator"], json.loads(x)["weight"]) for x in lines} == {
        ("ann", 1.0),
        ("cyd", 0.0),
    }
    lines = client.get("/api/export?min_reliability=0.5", headers=admin).text.splitlines()
    assert {json.loads(x)["annotator"] for x in lines} == {"ann"}
    r = client.get("/api/export?min_reliability=2", headers=admin)
    assert r.status_code == 422
    r = client.get("/api/export?consensus=borda&weight_by_reliability=true", headers=admin)
    assert r.status_code == 422 and "consensus" in str(r.json()["detail"])


def test_next_item_carries_safe_markdown(tmp_path):
    from fastapi.testclient import TestClient

    from rlhfkit.collect.annotate.app import create_app

    cands = tmp_path / "md.jsonl"
    texts = [
        "Use `sorted`:\n\n```python\nprint(sorted([3, 1, 2]))\n```\n\n[docs](https://docs.python.org)",
        '<script>alert(1)</script> <img src=x onerror="alert(2)"> [x](javascript:alert(3))',
    ]
    rec = {
        "prompt": "How do I **sort**?",
        "responses": [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)],
    }
    cands.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    store = Store(tmp_path / "ann.db")
    store.init()
    store.import_candidates(cands)
    token = store.add_annotator("ann")
    client = TestClient(create_app(tmp_path / "ann.db", secret=SECRET))
    item = client.get("/api/next", headers=bearer(token)).json()
    html = {r["id"]: r["html"] for r in item["responses"]}
    assert item["prompt_html"] == "<p>How do I <strong>sort</strong>?</p>\n"
    assert (
        '<pre><code class="language-python">print(sorted([3, 1, 2]))\n</code></pre>' in html["r0"]
    )
    assert (
        '<a href="https://docs.python.org" target="_blank" rel="noopener noreferrer nofollow">'
        in html["r0"]
    )
    assert "<script" not in html["r1"] and "<img" not in html["r1"] and "href" not in html["r1"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html["r1"]
    assert {r["id"]: r["text"] for r in item["responses"]} == {"r0": texts[0], "r1": texts[1]}


@pytest.mark.parametrize(
    "text, absent",
    [
        ("[a](javascript:alert(1))", "href"),
        ("[a](JaVaScRiPt:alert(1))", "href"),
        ("[a](data:text/html;base64,PHNjcmlwdD4=)", "href"),
        ("[a](vbscript:msgbox)", "href"),
        ("[a](//evil.example/x)", "href"),
        ("![tracker](https://evil.example/pixel.png)", "<img"),
        ('<a href="https://x.y" onclick="alert(1)">x</a>', "<a "),
        ("<iframe src=https://x.y></iframe>", "<iframe"),
        # the quote stays inside the title attribute, escaped: no attribute of its own
        ('[a](https://x.y "t\\" onmouseover=\\"alert(1)")', 'onmouseover="'),
    ],
)
def test_markdown_never_emits_active_content(text, absent):
    from rlhfkit.collect.annotate.markdown import render_markdown

    assert absent not in render_markdown(text)


def test_guidelines_panel_is_rendered_safely_and_follows_the_file(api):
    client, tokens, _, guide = api
    client.post("/api/login", json={"token": tokens["ann"]})
    page = client.get("/").text
    assert '<details id="guidelines"' in page
    assert "<h1>Rank by <em>accuracy</em></h1>" in page
    assert "&lt;script&gt;window.x = 1&lt;/script&gt;" in page and "<script>window.x" not in page
    guide.write_text("Second version: **ties are fine**.\n", encoding="utf-8")
    os.utime(guide, (1, 1))  # a different mtime, whatever the clock's resolution
    assert "<strong>ties are fine</strong>" in client.get("/").text


def test_guidelines_file_errors(tmp_path):
    from rlhfkit.collect.annotate.app import create_app
    from rlhfkit.errors import ConfigError

    store = make_store(tmp_path)
    store.close()
    with pytest.raises(ConfigError, match="cannot read the guidelines"):
        create_app(tmp_path / "ann.db", secret=SECRET, guidelines=tmp_path / "missing.md")
    bad = tmp_path / "latin1.md"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"latin1\.md: cannot read the guidelines \(not valid UTF-8\)"
    ):
        create_app(tmp_path / "ann.db", secret=SECRET, guidelines=bad)
    r = run_cli("annotate", "serve", "--db", str(tmp_path / "ann.db"), "--guidelines", str(bad))
    assert r.returncode == 2 and "not valid UTF-8" in r.stderr and "Traceback" not in r.stderr
