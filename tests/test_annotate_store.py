"""The annotation store (schema, constraints, import) and the agreement / consensus functions."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.collect.annotate.agreement import (
    agreement_report,
    average_ranks,
    borda,
    krippendorff_alpha,
    pairwise_agreement,
    ranked_pairs,
    ranking_units,
)
from rlhfkit.collect.annotate.store import InvalidRanking, Store, normalize_ranking
from rlhfkit.errors import DataError, RlhfkitError

# ---- Krippendorff's alpha ------------------------------------------------------------------------

# The reliability data of Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", §C:
# 4 observers x 12 units, None = missing. Published: nominal .743, ordinal .815, interval .849.
KRIPP = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
KRIPP_UNITS = [[v for v in col if v is not None] for col in zip(*KRIPP, strict=True)]


@pytest.mark.parametrize(
    "metric, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_alpha_matches_krippendorff_2011(metric, published):
    assert krippendorff_alpha(KRIPP_UNITS, metric) == pytest.approx(published, abs=5e-4)


def alpha_by_pairs(units, metric):
    """Oracle from the definition: α = 1 - (mean δ² over pairs within units, each unit weighted by
    1/(m_u - 1)) / (mean δ² over all pairs of pairable values). Plain loops."""
    pairable = [u for u in units if len(u) >= 2]
    values = [v for u in pairable for v in u]
    n = len(values)
    ranks = sorted(set(values))
    count = {c: values.count(c) for c in ranks}

    def d2(c, k):
        if metric == "interval":
            return (c - k) ** 2
        lo, hi = sorted((ranks.index(c), ranks.index(k)))
        return (sum(count[ranks[g]] for g in range(lo, hi + 1)) - (count[c] + count[k]) / 2) ** 2

    observed = (
        sum(d2(a, b) / (len(u) - 1) for u in pairable for a, b in itertools.permutations(u, 2)) / n
    )
    expected = sum(d2(a, b) for a, b in itertools.permutations(values, 2)) / (n * (n - 1))
    return 1 - observed / expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=4), min_size=2, max_size=12),
    st.sampled_from(["ordinal", "interval"]),
)
def test_alpha_equals_pairwise_definition(units, metric):
    pairable = [v for u in units if len(u) >= 2 for v in u]
    got = krippendorff_alpha(units, metric)
    if len(set(pairable)) < 2:
        assert got is None
    else:
        assert got == pytest.approx(alpha_by_pairs(units, metric), abs=1e-9)


def test_alpha_perfect_agreement_and_systematic_disagreement():
    same = [["a", "b", "c", "d"]] * 3
    assert krippendorff_alpha(ranking_units([same, same])) == pytest.approx(1.0)
    reversed_ = [["a", "b", "c", "d"], ["d", "c", "b", "a"]]
    assert krippendorff_alpha(ranking_units([reversed_] * 3)) < 0


def test_average_ranks_share_ties():
    assert average_ranks(["b", ["a", "d"], "c"]) == {"b": 1, "a": 2.5, "d": 2.5, "c": 4}


def test_pairwise_agreement_hand_computed():
    # pairs (a,b) (a,c) (b,c): first says a>b, a>c, b>c; second a>b, c>a, c>b -> agree on 1 of 3
    assert pairwise_agreement([["a", "b", "c"], ["c", "a", "b"]]) == (1, 3)
    # a tie agrees only with a tie
    assert pairwise_agreement([[["a", "b"], "c"], [["a", "b"], "c"]]) == (3, 3)
    assert pairwise_agreement([[["a", "b"], "c"], ["a", "b", "c"]]) == (2, 3)
    # three annotators: 3 annotator pairs x 3 response pairs
    assert pairwise_agreement([["a", "b", "c"]] * 3) == (9, 9)


# ---- consensus ----------------------------------------------------------------------------------


def test_ranked_pairs_condorcet_cycle_broken_by_margin():
    # a>b by 3-2 ... classic: 5 voters, majorities a>b (4-1), b>c (3-2), c>a (3-2)
    votes = [["a", "b", "c"]] * 2 + [["b", "c", "a"]] + [["c", "a", "b"]] * 2
    # margins: a>b: 4-1=3, c>a: 3-2=1, b>c: 3-2=1 -> lock a>b, then b>c (tie-broken by id: (b,c)<(c,a)),
    # then c>a would close a cycle and is skipped
    assert ranked_pairs(votes) == ["a", "b", "c"]


def test_ranked_pairs_majority_and_ties():
    assert ranked_pairs([["a", "b", "c"], ["a", "c", "b"], ["b", "a", "c"]]) == ["a", "b", "c"]
    assert ranked_pairs([["a", "b"], ["b", "a"]]) == [["a", "b"]]
    assert ranked_pairs([["x", ["y", "z"]]]) == ["x", ["y", "z"]]


def test_borda_hand_computed():
    # K=3: points 2,1,0. a: 2+1+2=5, b: 1+2+0=3, c: 0+0+1=1
    assert borda([["a", "b", "c"], ["b", "a", "c"], ["a", "c", "b"]]) == ["a", "b", "c"]
    # a tie shares points: a and b 1.5 each
    assert borda([[["a", "b"], "c"]]) == [["a", "b"], "c"]


def test_consensus_of_one_ranking_is_itself():
    for r in (["a", "b", "c"], [["a", "c"], "b"], ["c", ["a", "b"]]):
        assert ranked_pairs([r]) == [sorted(g) if isinstance(g, list) else g for g in r]
        assert borda([r]) == [sorted(g) if isinstance(g, list) else g for g in r]


def test_agreement_report_ranks_disagreement():
    items = [
        {
            "item_id": 1,
            "prompt": "p1",
            "rankings": [
                {"annotator": "x", "ranking": ["a", "b"]},
                {"annotator": "y", "ranking": ["a", "b"]},
            ],
        },
        {
            "item_id": 2,
            "prompt": "p2",
            "rankings": [
                {"annotator": "x", "ranking": ["a", "b"]},
                {"annotator": "y", "ranking": ["b", "a"]},
            ],
        },
        {"item_id": 3, "prompt": "p3", "rankings": [{"annotator": "x", "ranking": ["a", "b"]}]},
    ]
    rep = agreement_report(items)
    assert rep["items_with_overlap"] == 2
    assert rep["pairwise_agreement"] == 0.5
    assert [d["item_id"] for d in rep["most_disagreed"]] == [2, 1]
    assert rep["pairwise_agreement_by_annotator"] == {"x": 0.5, "y": 0.5}


# ---- the store ----------------------------------------------------------------------------------


def test_normalize_ranking():
    ids = ["a", "b", "c"]
    assert normalize_ranking(["a", ["b"], "c"], ids) == ["a", "b", "c"]
    assert normalize_ranking([["a", "b"], "c"], ids) == [["a", "b"], "c"]
    for bad in (["a", "b"], ["a", "b", "c", "c"], ["a", "b", "c", "d"], "abc", [1, 2, 3], []):
        with pytest.raises(InvalidRanking):
            normalize_ranking(bad, ids)


def test_cli_import_of_a_bad_file_creates_no_database(tmp_path, capsys):
    """``annotate import`` validates the whole file before it creates the database: a typo in the
    first import must not leave an empty ann.db behind (which ``serve`` would then happily open)."""
    from rlhfkit.cli import main

    good = {"prompt": "p", "responses": [{"id": "x", "text": "1"}, {"id": "y", "text": "2"}]}
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps(good) + "\n" + '{"prompt": "q", "responses": "oops"}\n')
    db = tmp_path / "ann.db"
    assert main(["annotate", "import", str(f), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "c.jsonl:2" in err and "'responses' must be a list" in err, err
    assert not db.exists() and not list(tmp_path.glob("ann.db*"))
    f.write_text(json.dumps(good) + "\n")
    assert main(["annotate", "import", str(f), "--db", str(db)]) == 0
    assert Store(db).counts()["items"] == 1


def test_import_validates_whole_file_and_is_idempotent(tmp_path):
    store = Store(tmp_path / "a.db")
    store.init()
    good = {"prompt": "p", "responses": [{"id": "x", "text": "1"}, {"id": "y", "text": "2"}]}
    f = tmp_path / "c.jsonl"
    f.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps({"prompt": "q", "responses": [{"id": "x", "text": "1"}]})
        + "\n"
    )
    with pytest.raises(DataError) as e:
        store.import_candidates(f)
    assert "c.jsonl:2" in str(e.value) and "at least 2" in str(e.value)
    assert store.counts()["items"] == 0  # the good first line was not half-imported
    dup = {"prompt": "p", "responses": [{"id": "x", "text": "1"}, {"id": "x", "text": "2"}]}
    f.write_text(json.dumps(dup) + "\n")
    with pytest.raises(DataError, match="unique"):
        store.import_candidates(f)
    f.write_text(
        json.dumps(good) + "\n" + json.dumps({"prompt": "q", "responses": ["u", "v", "w"]}) + "\n"
    )
    assert store.import_candidates(f) == (2, 0)
    assert store.import_candidates(f) == (0, 2)
    assert store.get_item(2)["responses"] == [
        {"id": "r0", "text": "u"},
        {"id": "r1", "text": "v"},
        {"id": "r2", "text": "w"},
    ]


def test_schema_constraints_hold_even_for_direct_sql(tmp_path):
    store = Store(tmp_path / "a.db")
    store.init()
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"]}) + "\n")
    store.import_candidates(f)
    aid = store.annotator_by_token(store.add_annotator("x")).id
    store.next_item(aid, overlap=1)
    with store.read() as conn:
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        for sql, args in [
            # a second assignment of one item to one annotator
            (
                "INSERT INTO assignments(item_id, annotator_id, response_order, status, assigned_at) VALUES (1, ?, '[]', 'assigned', 0)",
                (aid,),
            ),
            # an assignment of an item that does not exist
            (
                "INSERT INTO assignments(item_id, annotator_id, response_order, status, assigned_at) VALUES (99, ?, '[]', 'assigned', 0)",
                (aid,),
            ),
            ("UPDATE assignments SET status = 'bogus'", ()),
            (
                "INSERT INTO flags(item_id, annotator_id, reason, created_at) VALUES (1, ?, 'meh', 0)",
                (aid,),
            ),
            ("UPDATE items SET responses = 'not json'", ()),
        ]:
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(sql, args)


def test_active_counter_follows_assignments(tmp_path):
    store = Store(tmp_path / "a.db")
    store.init()
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"]}) + "\n")
    store.import_candidates(f)
    a, b, c = (store.annotator_by_token(store.add_annotator(n)).id for n in "abc")

    def active():
        with store.read() as conn:
            return conn.execute("SELECT active FROM items WHERE id = 1").fetchone()[0]

    store.next_item(a, overlap=2)
    store.next_item(b, overlap=2)
    assert active() == 2
    store.skip(a, 1, "x")
    assert active() == 1
    store.submit_ranking(b, 1, ["r1", "r0"])
    assert active() == 1
    assert store.next_item(c, overlap=2)["item_id"] == 1
    assert active() == 2
    with store.write() as conn:  # what an expired assignment goes through
        conn.execute("DELETE FROM assignments WHERE annotator_id = ?", (c,))
    assert active() == 1
    # a submitted assignment cannot be deleted from under its ranking
    with pytest.raises(sqlite3.IntegrityError), store.write() as conn:
        conn.execute("DELETE FROM assignments WHERE annotator_id = ?", (b,))


def test_annotator_names_unique_and_tokens_rotate(tmp_path):
    store = Store(tmp_path / "a.db")
    store.init()
    t = store.add_annotator("ann")
    with pytest.raises(RlhfkitError, match="already exists"):
        store.add_annotator("ann")
    with pytest.raises(RlhfkitError):
        store.add_annotator("")
    with pytest.raises(RlhfkitError):
        store.rotate_token("nobody")
    t2 = store.rotate_token("ann")
    assert store.annotator_by_token(t) is None and store.annotator_by_token(t2).name == "ann"


def test_not_a_database(tmp_path):
    p = tmp_path / "x.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="not an SQLite database"):
        Store(p).init()


# ---- issue #20: names and text from other people reach terminals safely ----------------------------


@pytest.mark.parametrize(
    "name", ["evil\x1b[2J", "admin\u202etxt.exe", "tab\there", "zero\u200bwidth", "nl\nx"]
)
def test_annotator_names_with_control_or_formatting_characters_are_refused(tmp_path, name):
    store = Store(tmp_path / "a.db")
    store.init()
    with pytest.raises(RlhfkitError, match="printable characters"):
        store.add_annotator(name)
    assert store.counts()["annotators"] == 0
    store.add_annotator("José Núñez 李")  # non-ASCII letters are fine


def test_stats_never_prints_control_characters_raw(tmp_path, capsys):
    """A database written before names were checked (or by hand) may hold an ESC or a U+202E;
    `stats` shows them escaped, in the table and in --json, and prompts likewise."""
    from rlhfkit.cli.annotate import main

    db = tmp_path / "a.db"
    store = Store(db)
    store.init()
    cands = tmp_path / "c.jsonl"
    rs = [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]
    cands.write_text(json.dumps({"prompt": "red \x1b[31m alert", "responses": rs}) + "\n")
    store.import_candidates(cands)
    for name in ("mallory", "bob"):
        store.add_annotator(name)
    with sqlite3.connect(db) as conn:  # the names a check would now refuse
        conn.execute("UPDATE annotators SET name = 'x\x1b]0;pwned\x07' WHERE name = 'mallory'")
        conn.execute("UPDATE annotators SET name = 'b\u202eob' WHERE name = 'bob'")
    for aid, ranking in ((1, ["a", "b"]), (2, ["b", "a"])):
        item = store.next_item(aid, overlap=2)["item_id"]
        store.submit_ranking(aid, item, ranking)
    for args in ([], ["--json"]):
        assert main(["stats", "--db", str(db), *args]) == 0
        out = capsys.readouterr().out
        assert not any(c in out for c in "\x1b\x07\u202e"), repr(out)
        assert "\\u001b]0;pwned\\u0007" in out and "b\\u202eob" in out and "red \\u001b[31m" in out
        if args:
            names = {a["name"] for a in json.loads(out)["annotators"]}
            assert names == {"x\x1b]0;pwned\x07", "b\u202eob"}  # still exact JSON
