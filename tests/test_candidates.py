"""The one reader of candidate groups and response rows (data/candidates.py)."""

from __future__ import annotations

import json

import pytest

from rlhfkit.data.candidates import (
    parse_candidate,
    parse_response_row,
    read_candidates,
    read_response_rows,
)
from rlhfkit.errors import DataError

CONV = [{"role": "user", "content": "Explain tides."}]


def test_candidate_groups_with_ids_bare_strings_and_conversations():
    g = parse_candidate({"prompt": "p", "responses": [{"id": 7, "text": "a", "model": "m"}, "b"]})
    assert [(r.id, r.text) for r in g.responses] == [("7", "a"), ("r1", "b")]
    assert g.responses[0].meta == {"model": "m"}
    c = parse_candidate({"prompt": CONV, "responses": ["x", "y"], "source": "s"})
    assert c.prompt == CONV and c.prompt_text == "Explain tides." and c.fields == {"source": "s"}


@pytest.mark.parametrize(
    "record, message",
    [
        ([1], "expected an object with 'prompt' and 'responses'"),
        ({"responses": ["a"]}, "missing field 'prompt'"),
        ({"prompt": "  ", "responses": ["a", "b"]}, "'prompt' must be a non-empty string"),
        ({"prompt": 3, "responses": ["a", "b"]}, "'prompt' must be a string or a list of messages"),
        ({"prompt": [{"role": "user"}], "responses": ["a", "b"]}, "prompt[0] is missing 'content'"),
        ({"prompt": "p", "responses": ["a"]}, "'responses' must be a list of at least 2"),
        (
            {"prompt": "p", "responses": [{"id": "a"}, "b"]},
            "responses[0] must be an object with a string 'text'",
        ),
        (
            {"prompt": "p", "responses": [{"id": True, "text": "x"}, "b"]},
            "responses[0].id must be a non-empty string",
        ),
        (
            {"prompt": "p", "responses": [{"id": "r1", "text": "x"}, "b"]},
            "response ids must be unique within a record (repeated: r1)",
        ),
    ],
)
def test_bad_candidate_groups_name_the_file_and_line(record, message):
    with pytest.raises(DataError, match=r"f\.jsonl:3: ") as e:
        parse_candidate(record, "f.jsonl", 3, min_responses=2)
    assert message in str(e.value)


def test_response_rows_with_step_and_eos():
    row = parse_response_row({"prompt": CONV, "response": "r", "step": 4, "has_eos": True, "kl": 1})
    assert (row.prompt_text, row.response_text, row.step, row.has_eos) == (
        "Explain tides.",
        "r",
        4,
        True,
    )
    assert row.fields == {"kl": 1}
    assert parse_response_row({"response": "r"}).prompt == ""  # a prompt may be left out
    for bad, message in [({"response": 1}, "'response' must be a string"),
                         ({"response": "r", "step": "1"}, "'step' must be an integer"),
                         ({"response": "r", "has_eos": 1}, "'has_eos' must be true or false"),
                         ({"prompt": "p"}, "missing field 'response'")]:  # fmt: skip
        with pytest.raises(DataError, match=message):
            parse_response_row(bad, "f", 1)


def test_files(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"]}) + "\n", encoding="utf-8")
    assert len(read_candidates(p)) == 1
    with pytest.raises(DataError, match="a record holds at most 1"):
        read_candidates(p, min_responses=1, max_responses=1)
    empty = tmp_path / "e.jsonl"
    empty.write_text("", encoding="utf-8")
    for read in (read_candidates, read_response_rows):
        with pytest.raises(DataError, match="no records found"):
            read(empty)
