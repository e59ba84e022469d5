"""rlhfkit.data: the ranking record, readers of every format, writers, the data CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhfkit.data import (
    Ranking,
    Response,
    ranking_to_pairs,
    read_prompts,
    read_rankings,
)
from rlhfkit.errors import DataError


def rk(ranking, ids="abcd", **kw) -> Ranking:
    return Ranking("Why is the sky blue?", [Response(i, f"answer {i}") for i in ids], ranking, **kw)


def write_lines(path: Path, records) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
        encoding="utf-8",
    )
    return path


NATIVE = {
    "prompt": "Explain gravity.",
    "responses": [{"id": "a", "text": "Things fall."}, {"id": "b", "text": "Mass attracts."}],
    "ranking": ["b", "a"],
}


# -- the record ----------------------------------------------------------------------------------


def test_ranks_dense_with_ties():
    assert rk(["a", ["b", "c"], "d"]).ranks() == [1, 2, 2, 3]
    assert rk(["d", "c", "b", "a"]).ranks() == [4, 3, 2, 1]
    assert rk([["a", "d"], ["b", "c"]]).ranks() == [1, 2, 2, 1]


def test_ranking_to_pairs_hand_cases():
    assert ranking_to_pairs(["a", "b"]) == [("a", "b")]
    assert ranking_to_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert ranking_to_pairs(["a", ["b", "c"], "d"]) == [
        ("a", "b"),
        ("a", "c"),
        ("a", "d"),
        ("b", "d"),
        ("c", "d"),
    ]
    assert ranking_to_pairs(rk(["a", ["b", "c"], "d"])) == ranking_to_pairs(["a", ["b", "c"], "d"])
    assert len(ranking_to_pairs(list("abcdef"))) == 15  # K(K-1)/2
    assert ranking_to_pairs([["a", "b"]]) == []  # everything tied: no pair
    with pytest.raises(DataError, match="ranked twice"):
        ranking_to_pairs(["a", ["b", "a"]])


def test_singleton_tie_group_is_unwrapped_and_round_trips():
    r = rk([["a"], "b", ["c", "d"]])
    assert r.ranking == ["a", "b", ["c", "d"]]
    assert Ranking.from_dict(r.to_dict()) == r
    assert r.has_ties and not rk(list("abcd")).has_ties


def test_from_dict_round_trip_keeps_optional_fields():
    d = {**NATIVE, "annotator": "ann1", "meta": {"source": "x"}, "margin": 1.5}
    r = Ranking.from_dict(d)
    assert r.annotator == "ann1" and r.meta == {"source": "x"} and r.margin == 1.5
    assert r.to_dict() == d
    # integer ids become strings; unknown top-level fields go to meta
    r2 = Ranking.from_dict(
        {
            **NATIVE,
            "responses": [{"id": 1, "text": "x"}, {"id": 2, "text": "y"}],
            "ranking": [2, 1],
            "item_id": 7,
        }
    )
    assert [x.id for x in r2.responses] == ["1", "2"] and r2.ranking == ["2", "1"]
    assert r2.meta == {"item_id": 7}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ranking": ["a", "z"]}, "ranking id 'z' is not among the responses"),
        ({"ranking": ["a"]}, "not ranked: 'b'"),
        ({"ranking": ["a", "b", "a"]}, "'a' is ranked twice"),
        ({"ranking": [["a", "b"]]}, "everything is tied"),
        ({"responses": [{"id": "a", "text": "x"}]}, "at least two responses"),
        (
            {"responses": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
            "duplicate response id 'a'",
        ),
        (
            {"responses": [{"id": "a", "text": "x"}, {"id": "b", "text": "  "}]},
            "'b' has empty text",
        ),
        (
            {"responses": [{"id": "a", "text": "x"}, {"id": "b"}]},
            r"responses\[1\] is missing field 'text'",
        ),
        (
            {"responses": [{"id": "a", "text": "x"}, {"id": "b", "text": 3}]},
            r"responses\[1\].text must be a string",
        ),
        ({"prompt": ["x"]}, "'prompt' must be a string"),
        ({"ranking": "a,b"}, "'ranking' must be a list"),
        ({"ranking": ["a", 1.5]}, r"ranking\[1\] must be a string id"),
        ({"margin": "big"}, "margin must be a number"),
        ({"annotator": ["x"]}, "'annotator' must be a string"),
        ({"meta": []}, "'meta' must be an object"),
    ],
)
def test_from_dict_errors_name_file_and_line(change, message):
    with pytest.raises(DataError, match=message) as e:
        Ranking.from_dict({**NATIVE, **change}, path="f.jsonl", line=7)
    assert str(e.value).startswith("f.jsonl:7: ")


@pytest.mark.parametrize("field", ["prompt", "responses", "ranking"])
def test_from_dict_missing_field(field):
    d = dict(NATIVE)
    del d[field]
    with pytest.raises(DataError, match=f"f.jsonl:3: missing field '{field}'"):
        Ranking.from_dict(d, path="f.jsonl", line=3)


def test_constructor_validates():
    with pytest.raises(DataError, match="not among the responses"):
        rk(["a", "b", "c", "x"])


def test_read_rankings_and_errors(tmp_path):
    f = write_lines(tmp_path / "r.jsonl", [NATIVE, "", {**NATIVE, "ranking": ["a", "b"]}])
    out = read_rankings(f)
    assert [r.ranking for r in out] == [["b", "a"], ["a", "b"]]
    bad = write_lines(tmp_path / "bad.jsonl", [NATIVE, '{"prompt": '])
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        read_rankings(bad)
    with pytest.raises(DataError, match="file not found"):
        read_rankings(tmp_path / "nope.jsonl")


def test_read_prompts(tmp_path):
    f = write_lines(
        tmp_path / "p.jsonl",
        [{"prompt": "Explain gravity."}, {"prompt": [{"role": "user", "content": "Hi?"}]}],
    )
    assert read_prompts(f) == ["Explain gravity.", "Hi?"]
    conv = write_lines(
        tmp_path / "c.jsonl",
        [
            {
                "prompt": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi?"},
                ]
            }
        ],
    )
    assert read_prompts(conv) == ["System: Be brief.\n\nUser: Hi?\n\nAssistant:"]
    with pytest.raises(DataError, match=r"q.jsonl:2: missing field 'prompt'"):
        read_prompts(write_lines(tmp_path / "q.jsonl", [{"prompt": "a"}, {"text": "b"}]))
    with pytest.raises(DataError, match=r"e.jsonl:1: empty prompt"):
        read_prompts(write_lines(tmp_path / "e.jsonl", [{"prompt": " "}]))
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert read_prompts(txt) == ["one", "two"]
