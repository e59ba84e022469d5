"""rlhfkit.data: the ranking record, readers of every format, writers, the data CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhfkit.data import (
    Ranking,
    Response,
    pair_rows,
    ranking_to_pairs,
    read_preferences,
    read_prompts,
    read_rankings,
    write_pairs,
    write_rankings,
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
        ({"prompt": 3}, "'prompt' must be a string or a list of messages"),
        ({"prompt": ["x"]}, r"prompt\[0\] must be a message object"),
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


def test_native_conversational_prompt():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    r = Ranking.from_dict({**NATIVE, "prompt": msgs})
    assert r.prompt == "System: Be brief.\n\nUser: Hi?\n\nAssistant:"
    assert r.meta == {"prompt_messages": msgs}
    assert Ranking.from_dict(r.to_dict()) == r


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


# -- TRL pairs ----------------------------------------------------------------------------------


def test_trl_explicit_prompt_and_margin(tmp_path):
    f = write_lines(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "margin": 1.5},
            {"prompt": "2+2=", "chosen": "4", "rejected": "5", "id": "x1"},
        ],
    )
    data = read_preferences(f)
    assert data.format == "pairs" and data.skipped == 0
    a, b = data
    assert a.prompt == "The sky is" and [r.text for r in a.responses] == [" blue.", " green."]
    assert a.ranking == ["chosen", "rejected"] and a.margin == 1.5
    assert b.margin is None and b.meta == {"id": "x1"}  # extra fields kept in meta


def test_trl_implicit_prompt_is_shared_prefix_cut_at_a_word_boundary(tmp_path):
    f = write_lines(
        tmp_path / "implicit.jsonl",
        [
            {"chosen": "The sky is blue.", "rejected": "The sky is green."},
            {"chosen": "The sky is blue", "rejected": "The sky is bluer"},  # not "blue" | "" / "r"
            {"chosen": "Yes", "rejected": "Yes, indeed"},  # one is a prefix of the other
        ],
    )
    got = [(r.prompt, r.responses[0].text, r.responses[1].text) for r in read_preferences(f)]
    assert got == [
        ("The sky is", " blue.", " green."),
        ("The sky is", " blue", " bluer"),
        ("", "Yes", "Yes, indeed"),
    ]
    same = write_lines(tmp_path / "same.jsonl", [{"chosen": "abc", "rejected": "abc"}])
    with pytest.raises(DataError, match=r"same.jsonl:1: chosen and rejected are identical"):
        read_preferences(same)


USER = {"role": "user", "content": "What color is the sky?"}
GOOD = {"role": "assistant", "content": "Blue."}
BAD = {"role": "assistant", "content": "Green."}


def test_trl_conversational_explicit_and_implicit(tmp_path):
    f = write_lines(
        tmp_path / "conv.jsonl", [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}]
    )
    (r,) = read_preferences(f)
    assert r.prompt == "What color is the sky?"
    assert [x.text for x in r.responses] == ["Blue.", "Green."]
    assert r.meta["prompt_messages"] == [USER]
    assert r.responses[0].meta["messages"] == [GOOD]
    imp = write_lines(tmp_path / "conv2.jsonl", [{"chosen": [USER, GOOD], "rejected": [USER, BAD]}])
    (r2,) = read_preferences(imp)
    assert r2.prompt == r.prompt and r2.meta["prompt_messages"] == [USER]
    # HuggingFaceH4/ultrafeedback_binarized: a string prompt beside full conversations
    h4 = write_lines(
        tmp_path / "h4.jsonl",
        [
            {
                "prompt": USER["content"],
                "chosen": [USER, GOOD],
                "rejected": [USER, BAD],
                "score_chosen": 8.0,
            }
        ],
    )
    (r4,) = read_preferences(h4)
    assert r4.prompt == r.prompt and [x.text for x in r4.responses] == ["Blue.", "Green."]
    assert r4.meta["score_chosen"] == 8.0
    multi = write_lines(
        tmp_path / "conv3.jsonl",
        [
            {
                "prompt": [{"role": "system", "content": "Be brief."}, USER],
                "chosen": [GOOD],
                "rejected": [BAD],
            }
        ],
    )
    (r3,) = read_preferences(multi)
    assert r3.prompt == "System: Be brief.\n\nUser: What color is the sky?\n\nAssistant:"


@pytest.mark.parametrize(
    "record, message",
    [
        ({"prompt": "p", "chosen": "a"}, "missing field 'rejected'"),
        ({"prompt": "p", "chosen": "a", "rejected": ""}, "'rejected' has empty text"),
        ({"prompt": "p", "chosen": "a", "rejected": 3}, "'rejected' must be a string"),
        (
            {"prompt": 5, "chosen": "a", "rejected": "b"},
            "'prompt' must be a string or a list of messages",
        ),
        (
            {"prompt": [USER], "chosen": "a", "rejected": [BAD]},
            "'chosen' must be a non-empty list of messages",
        ),
        (
            {"prompt": [USER], "chosen": [{"role": "assistant"}], "rejected": [BAD]},
            r"chosen\[0\] is missing 'content'",
        ),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "x"}, "margin must be a number"),
        ({"chosen": [USER, GOOD], "rejected": [USER]}, "do not diverge"),
        ({"chosen": "a", "rejected": ["b"]}, "both be strings or both be message lists"),
    ],
)
def test_trl_errors_name_file_and_line(tmp_path, record, message):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    f = write_lines(tmp_path / "bad.jsonl", [good, record])
    with pytest.raises(DataError, match=message) as e:
        read_preferences(f, format="pairs")
    assert str(e.value).startswith(f"{f}:2: ")


# -- HH-RLHF ------------------------------------------------------------------------------------

HH = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Fine, thanks.",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Go away.",
}


def test_hh_prompt_up_to_last_assistant_turn(tmp_path):
    f = write_lines(tmp_path / "hh.jsonl", [HH])
    data = read_preferences(f)
    assert data.format == "hh"
    (r,) = data
    assert r.prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:"
    assert [x.text for x in r.responses] == [" Fine, thanks.", " Go away."]
    assert r.prompt + r.responses[0].text == HH["chosen"]  # nothing lost


@pytest.mark.parametrize(
    "record, message",
    [
        ({**HH, "rejected": "\n\nHuman: Bye\n\nAssistant: Go away."}, "differ before their last"),
        ({**HH, "rejected": "\n\nHuman: Hi"}, r"'rejected' has no '\\n\\nAssistant:' turn"),
        (
            {**HH, "rejected": HH["chosen"].replace(" Fine, thanks.", "")},
            "'rejected' has empty text",
        ),
        ({"chosen": HH["chosen"]}, "missing field 'rejected'"),
    ],
)
def test_hh_errors(tmp_path, record, message):
    f = write_lines(tmp_path / "hh.jsonl", [HH, record])
    with pytest.raises(DataError, match=message) as e:
        read_preferences(f)
    assert str(e.value).startswith(f"{f}:2: ")


# -- UltraFeedback ------------------------------------------------------------------------------


def uf_completion(text, *ratings, **extra):
    aspects = ["helpfulness", "honesty", "instruction_following", "truthfulness"]
    return {
        "response": text,
        "annotations": {
            a: {"Rating": str(r), "Rationale": "…"} for a, r in zip(aspects, ratings, strict=False)
        },
        **extra,
    }


def test_ultrafeedback_mean_aspect_rating_with_ties(tmp_path):
    rec = {
        "instruction": "Name a color.",
        "source": "flan",
        "completions": [
            uf_completion("Red.", 4, 4, 5, 5, model="m0"),  # 4.5
            uf_completion("Blue.", 5, 5, 5, 5, model="m1"),  # 5.0
            uf_completion("Green.", 5, 4, 4, 5),  # 4.5 (tie with Red)
            uf_completion("Seven.", 1, 2, "N/A", 1),  # N/A ignored: 4/3
        ],
    }
    data = read_preferences(write_lines(tmp_path / "uf.jsonl", [rec]))
    assert data.format == "ultrafeedback"
    (r,) = data
    assert r.prompt == "Name a color."
    assert r.ranking == ["1", ["0", "2"], "3"]
    assert r.ranks() == [2, 1, 2, 3]
    assert r.responses[0].meta == {"model": "m0", "score": 4.5, "score_source": "annotations"}
    assert r.meta == {"source": "flan"}
    assert len(ranking_to_pairs(r)) == 5


def test_ultrafeedback_fallback_scores_and_errors(tmp_path):
    rec = {
        "prompt": "p",
        "completions": [
            {"response": "a", "overall_score": 7.5},
            {"response": "b", "overall_score": 3},
            {"response": "c"},  # unrated: left out and counted
        ],
    }
    (r,) = read_preferences(write_lines(tmp_path / "uf.jsonl", [rec]), format="ultrafeedback")
    assert r.ranking == ["0", "1"] and r.meta == {"unrated_completions": 1}
    tied = {"instruction": "p", "completions": [uf_completion("a", 3, 3), uf_completion("b", 3, 3)]}
    with pytest.raises(
        DataError, match=r"t.jsonl: no record with an ordered pair: .* 1 fully tied"
    ):
        read_preferences(write_lines(tmp_path / "t.jsonl", [tied]))
    one = {"instruction": "p", "completions": [uf_completion("a", 3, 3)]}
    with pytest.raises(DataError, match=r"o.jsonl:1: needs at least two rated completions"):
        read_preferences(write_lines(tmp_path / "o.jsonl", [one]))
    bad = {"instruction": "p", "completions": [uf_completion("a", "great"), uf_completion("b", 3)]}
    with pytest.raises(
        DataError,
        match=r"b.jsonl:1: completions\[0\].annotations.helpfulness.Rating is not a number",
    ):
        read_preferences(write_lines(tmp_path / "b.jsonl", [bad]))


# -- detection, containers, skip_invalid --------------------------------------------------------


def test_auto_detection_errors(tmp_path):
    with pytest.raises(DataError, match=r"u.jsonl:1: cannot tell the preference format.*'text'"):
        read_preferences(write_lines(tmp_path / "u.jsonl", [{"text": "x"}]))
    with pytest.raises(DataError, match="prompt-only file"):
        read_preferences(write_lines(tmp_path / "p.jsonl", [{"prompt": "x"}]))
    with pytest.raises(
        DataError, match=r"l.jsonl:1: expected a JSON object per record, got a list"
    ):
        read_preferences(write_lines(tmp_path / "l.jsonl", [[1, 2]]))
    with pytest.raises(DataError, match="no records found"):
        read_preferences(write_lines(tmp_path / "e.jsonl", []))
    with pytest.raises(DataError, match="unknown format 'csv'"):
        read_preferences(write_lines(tmp_path / "n.jsonl", [NATIVE]), format="csv")
    # detection looks past lines that do not decode
    data = read_preferences(write_lines(tmp_path / "d.jsonl", ["{oops", NATIVE]), skip_invalid=True)
    assert data.format == "rankings" and len(data) == 1 and data.skipped == 1


def test_skip_invalid_counts_reasons_with_lines(tmp_path):
    recs = [
        NATIVE,
        "{bad json",
        {**NATIVE, "ranking": ["a", "z"]},
        NATIVE,
        {"prompt": "p"},
        {**NATIVE, "ranking": ["a", "y"]},
    ]
    f = write_lines(tmp_path / "mixed.jsonl", recs)
    with pytest.raises(DataError, match=r"mixed.jsonl:2: invalid JSON"):
        read_preferences(f)
    data = read_preferences(f, skip_invalid=True)
    assert isinstance(data, list) and len(data) == 2 and data.skipped == 4
    assert data.lines_by_reason["ranking id … is not among the responses"] == [3, 6]
    report = data.report()
    assert (
        "skipped 4 invalid" in report
        and "2× ranking id … is not among the responses (lines 3, 6)" in report
    )
    assert "missing field … (line 5)" in report and "invalid JSON" in report
    with pytest.raises(DataError, match="no valid records"):
        read_preferences(
            write_lines(tmp_path / "allbad.jsonl", [{**NATIVE, "ranking": ["a"]}]),
            skip_invalid=True,
        )


def test_json_list_with_line_numbers(tmp_path):
    f = tmp_path / "data.json"
    f.write_text(
        "[\n" + json.dumps(NATIVE) + ",\n" + json.dumps({**NATIVE, "ranking": ["a"]}) + "\n]\n"
    )
    with pytest.raises(DataError, match=r"data.json:3: response\(s\) not ranked: 'b'"):
        read_preferences(f)
    f.write_text("[\n" + json.dumps(NATIVE) + ",\n {oops}\n]")
    with pytest.raises(DataError, match=r"data.json:3: invalid JSON"):
        read_preferences(f)
    f.write_text("[" + json.dumps(NATIVE) + "]")
    assert len(read_preferences(f)) == 1
    f.write_text(json.dumps(NATIVE, indent=2))  # one pretty-printed record
    assert len(read_preferences(f)) == 1
    f.write_text(json.dumps(NATIVE) + "\n" + json.dumps(NATIVE) + "\n")  # JSONL named .json
    assert len(read_preferences(f)) == 2


def test_parquet_and_saved_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"prompt": "2+2=", "chosen": "4", "rejected": ""},  # empty text: invalid
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p.parquet:2: response 'rejected' has empty text"):
        read_preferences(tmp_path / "p.parquet")
    assert len(read_preferences(tmp_path / "p.parquet", skip_invalid=True)) == 1

    ds = datasets.Dataset.from_list([rows[0], {"prompt": "Q", "chosen": "yes", "rejected": "no"}])
    ds.save_to_disk(str(tmp_path / "ds"))
    data = read_preferences(tmp_path / "ds")
    assert [r.prompt for r in data] == ["The sky is", "Q"]
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="DatasetDict with splits"):
        read_preferences(tmp_path / "dd")
    assert len(read_preferences(tmp_path / "dd" / "train")) == 2
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="save_to_disk"):
        read_preferences(tmp_path / "empty_dir")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk.parquet: not a readable Parquet file"):
        read_preferences(tmp_path / "junk.parquet")


def test_missing_datasets_package_gives_a_clear_message(tmp_path, monkeypatch):
    import datasets

    datasets.Dataset.from_list([{"prompt": "Q", "chosen": "yes", "rejected": "no"}]).save_to_disk(
        str(tmp_path / "ds")
    )
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(
        DataError, match=r"needs the optional 'datasets' package: pip install 'rlhfkit\[datasets\]'"
    ):
        read_preferences(tmp_path / "ds")


# -- writers and round trips --------------------------------------------------------------------


def test_write_pairs_one_row_per_strict_pair_ties_excluded_margin_kept(tmp_path):
    r = rk(["a", ["b", "c"], "d"], margin=0.5)
    rows = pair_rows([r])
    assert [(x["chosen"], x["rejected"]) for x in rows] == [
        ("answer a", "answer b"),
        ("answer a", "answer c"),
        ("answer a", "answer d"),
        ("answer b", "answer d"),
        ("answer c", "answer d"),
    ]
    assert all(x["prompt"] == r.prompt and x["margin"] == 0.5 for x in rows)
    assert write_pairs(tmp_path / "p.jsonl", [r, rk(["b", "a"], ids="ab")]) == 6
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and "margin" not in lines[-1]


def test_ours_to_trl_pairs_and_back(tmp_path):
    original = [rk(["a", ["b", "c"], "d"]), rk(["b", "a"], ids="ab", margin=2.0)]
    write_rankings(tmp_path / "r.jsonl", original)
    assert read_rankings(tmp_path / "r.jsonl") == original
    for name in ("p.jsonl", "p.parquet"):
        write_pairs(tmp_path / name, original)
        back = read_preferences(tmp_path / name)
        assert back.format == "pairs"
        want = [(r.prompt, w.text, lo.text, r.margin) for r in original for w, lo in r.pairs()]
        got = [(b.prompt, b.responses[0].text, b.responses[1].text, b.margin) for b in back]
        assert got == want


def test_trl_to_ours_and_back_is_identity(tmp_path):
    rows = [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "margin": 1.0},
        {"prompt": "Q", "chosen": "yes", "rejected": "no", "margin": None},
    ]
    write_lines(tmp_path / "in.jsonl", rows)
    write_rankings(tmp_path / "r.jsonl", read_preferences(tmp_path / "in.jsonl"))
    write_pairs(tmp_path / "out.jsonl", read_rankings(tmp_path / "r.jsonl"))
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == [rows[0], {"prompt": "Q", "chosen": "yes", "rejected": "no"}]
    # conversational records come back conversational
    conv = [{"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}]
    write_lines(tmp_path / "c.jsonl", conv)
    write_rankings(tmp_path / "cr.jsonl", read_preferences(tmp_path / "c.jsonl"))
    write_pairs(tmp_path / "c_out.jsonl", read_rankings(tmp_path / "cr.jsonl"))
    assert [json.loads(x) for x in (tmp_path / "c_out.jsonl").read_text().splitlines()] == conv
    write_pairs(tmp_path / "c_out.parquet", read_rankings(tmp_path / "cr.jsonl"))
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "c_out.parquet").to_pylist() == conv


def test_writers_are_atomic(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("old\n")

    def broken():
        yield rk(["a", "b", "c", "d"])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_rankings(out, broken())
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]  # no temporary left behind
    with pytest.raises(DataError, match="rankings are written as JSONL"):
        write_rankings(tmp_path / "r.parquet", [rk(["a", "b", "c", "d"])])
    with pytest.raises(DataError, match="unknown pairs format"):
        write_pairs(tmp_path / "x.csv", [], format="csv")


def test_lone_surrogate_text_is_written_escaped(tmp_path):
    f = write_lines(
        tmp_path / "s.jsonl", ['{"prompt": "p", "chosen": "\\ud800 x", "rejected": "y"}']
    )
    data = read_preferences(f)
    write_rankings(tmp_path / "out.jsonl", data)
    assert read_rankings(tmp_path / "out.jsonl") == list(data)


# -- properties ---------------------------------------------------------------------------------


@st.composite
def rankings_lists(draw, min_groups=1):
    """A ranking list over K distinct ids with random tie groups (inner lists)."""
    k = draw(st.integers(2, 8))
    ids = draw(st.permutations([f"r{i}" for i in range(k)]))
    n_groups = draw(st.integers(min(min_groups, k), k))
    cuts = sorted(
        draw(st.sets(st.integers(1, k - 1), min_size=n_groups - 1, max_size=n_groups - 1))
    )
    bounds = [0, *cuts, k]
    groups = [ids[a:b] for a, b in itertools.pairwise(bounds)]
    return [g if len(g) > 1 else g[0] for g in groups]


texts = st.text(min_size=1, max_size=30).filter(lambda s: s.strip())


@st.composite
def rankings(draw):
    ranking = draw(rankings_lists(min_groups=2))
    ids = sorted(i for g in ranking for i in (g if isinstance(g, list) else [g]))
    ids = draw(st.permutations(ids))
    return Ranking(
        draw(st.text(max_size=30)),
        [Response(i, draw(texts)) for i in ids],
        ranking,
        annotator=draw(st.none() | st.text(max_size=5)),
        margin=draw(st.none() | st.floats(-5, 5)),
    )


@given(rankings_lists())
def test_pair_count_is_total_minus_within_tie_pairs(ranking):
    sizes = [len(g) if isinstance(g, list) else 1 for g in ranking]
    k = sum(sizes)
    pairs = ranking_to_pairs(ranking)
    assert len(pairs) == k * (k - 1) // 2 - sum(t * (t - 1) // 2 for t in sizes)
    assert len(set(pairs)) == len(pairs)
    pos = {i: n for n, g in enumerate(ranking) for i in (g if isinstance(g, list) else [g])}
    assert all(pos[w] < pos[lo] for w, lo in pairs)  # winner strictly above loser


@given(rankings())
def test_ranks_agree_with_pairs(r):
    ranks = dict(zip([x.id for x in r.responses], r.ranks(), strict=True))
    pairs = set(ranking_to_pairs(r))
    for a in ranks:
        for b in ranks:
            assert ((a, b) in pairs) == (ranks[a] < ranks[b])


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(rankings(), min_size=1, max_size=4))
def test_round_trips(tmp_path, rs):
    assert [Ranking.from_dict(r.to_dict()) for r in rs] == rs
    write_rankings(tmp_path / "r.jsonl", rs)
    assert read_rankings(tmp_path / "r.jsonl") == rs
    n = write_pairs(tmp_path / "p.jsonl", rs)
    assert n == sum(len(r.pairs()) for r in rs)
    back = read_preferences(tmp_path / "p.jsonl", format="pairs")
    want = [(r.prompt, w.text, lo.text, r.margin) for r in rs for w, lo in r.pairs()]
    assert [(b.prompt, b.responses[0].text, b.responses[1].text, b.margin) for b in back] == want


# -- the CLI ------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlhfkit", "data", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_convert_and_stats(tmp_path):
    write_rankings(
        tmp_path / "r.jsonl",
        [rk(["a", ["b", "c"], "d"], annotator="ann1"), rk(["b", "a"], ids="ab")],
    )
    p = cli("convert", tmp_path / "r.jsonl", tmp_path / "p.parquet", "--to", "pairs")
    assert p.returncode == 0, p.stderr
    assert "wrote 6 pairs from 2 rankings records" in p.stdout
    assert len(read_preferences(tmp_path / "p.parquet")) == 6
    p = cli("convert", tmp_path / "p.parquet", tmp_path / "back.jsonl", "--to", "rankings")
    assert p.returncode == 0, p.stderr
    assert len(read_rankings(tmp_path / "back.jsonl")) == 6

    p = cli("stats", tmp_path / "r.jsonl", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert (
        s["records"] == 2 and s["distinct_prompts"] == 1 and s["k_distribution"] == {"2": 1, "4": 1}
    )
    assert s["pairs"] == 6 and s["tied_pairs"] == 1 and s["records_with_ties"] == 1
    assert s["annotators"] == 1 and s["records_per_annotator"] == {"ann1": 1}
    assert s["response_words"] == {"min": 2, "mean": 2.0, "median": 2.0, "max": 2}
    assert s["response_chars"]["max"] == len("answer a")
    p = cli("stats", tmp_path / "r.jsonl")
    assert p.returncode == 0 and "K distribution" in p.stdout and "K=4: 1" in p.stdout


def test_fully_tied_ranking_is_valid_and_holds_no_pair():
    r = rk([["a", "b", "c", "d"]])
    assert r.fully_tied and r.pairs() == [] and r.ranks() == [1, 1, 1, 1]
    assert not rk(["a", ["b", "c", "d"]]).fully_tied
    assert Ranking.from_dict(r.to_dict()) == r


def test_fully_tied_records_are_left_out_and_counted_everywhere(tmp_path):
    """UltraFeedback has K = 4 records with all four responses rated the same: legal data holding
    no comparison. Reading, converting and counting leave them out and say so, never failing,
    with or without --skip-invalid."""
    all_tied = {
        "instruction": "Name a colour.",
        "completions": [uf_completion(t, 4, 4) for t in ("Red.", "Blue.", "Green.", "Gold.")],
    }
    ordered = {
        "instruction": "Name a fruit.",
        "completions": [uf_completion("Apple.", 5, 5), uf_completion("Stone.", 1, 1)],
    }
    src = write_lines(tmp_path / "uf.jsonl", [ordered, all_tied, ordered])
    data = read_preferences(src)
    assert len(data) == 2 and data.fully_tied == 1 and data.skipped == 0
    assert "left out 1 fully tied (every response tied: no ordered pair) (line 2)" in data.report()
    native = write_lines(tmp_path / "r.jsonl", [NATIVE, {**NATIVE, "ranking": [["a", "b"]]}])
    assert read_rankings(native).fully_tied == 1

    for to, wrote in (("pairs", "wrote 2 pairs"), ("rankings", "wrote 2 rankings")):
        out = tmp_path / f"out-{to}.jsonl"
        p = cli("convert", src, out, "--to", to)
        assert p.returncode == 0, p.stderr
        assert wrote in p.stdout and "left out 1 fully tied" in p.stderr
        assert len(out.read_text().splitlines()) == 2
    p = cli("stats", src, "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["records"] == 2 and s["fully_tied_left_out"] == 1 and s["skipped_invalid"] == 0


def test_cli_errors_exit_2_and_leave_no_output(tmp_path):
    bad = write_lines(tmp_path / "bad.jsonl", [NATIVE, {**NATIVE, "ranking": ["a", "q"]}])
    out = tmp_path / "out.jsonl"
    p = cli("convert", bad, out, "--to", "pairs")
    assert p.returncode == 2
    assert f"rlhfkit data: error: {bad}:2: ranking id 'q' is not among the responses" in p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["bad.jsonl"]
    out.write_text("keep me\n")
    assert cli("convert", bad, out, "--to", "rankings").returncode == 2
    assert out.read_text() == "keep me\n"

    p = cli("convert", bad, out, "--to", "pairs", "--skip-invalid")
    assert p.returncode == 0, p.stderr
    assert "skipped 1 invalid: 1× ranking id … is not among the responses (line 2)" in p.stderr
    assert len(out.read_text().splitlines()) == 1

    p = cli("stats", tmp_path / "missing.jsonl")
    assert p.returncode == 2 and "missing.jsonl: file not found" in p.stderr
    p = cli("frobnicate")
    assert p.returncode == 2 and "unknown subcommand 'frobnicate'" in p.stderr
    p = cli("--help")
    assert p.returncode == 0 and "convert" in p.stdout and "stats" in p.stdout


def test_gzipped_jsonl(tmp_path):
    import gzip

    with gzip.open(tmp_path / "hh.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(HH) + "\n" + json.dumps({**HH, "rejected": "\n\nHuman: Hi"}) + "\n")
    with pytest.raises(DataError, match=r"hh.jsonl.gz:2: field 'rejected' has no"):
        read_preferences(tmp_path / "hh.jsonl.gz")
    assert read_preferences(tmp_path / "hh.jsonl.gz", skip_invalid=True).format == "hh"
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"bad.jsonl.gz:1: cannot decompress"):
        read_preferences(tmp_path / "bad.jsonl.gz")
