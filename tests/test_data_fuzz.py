"""Fuzzing the preference readers: whatever the bytes, the result is records or a DataError that
names the file (and the line, for anything past the file level) — never another exception — and
``rlhfkit data convert`` never leaves an output file behind when it fails."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhfkit.cli import main as rlhfkit_main
from rlhfkit.data import read_preferences, read_prompts
from rlhfkit.errors import DataError

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

VALID = [
    {
        "prompt": "Explain gravity.",
        "responses": [
            {"id": "a", "text": "Things fall."},
            {"id": "b", "text": "Mass attracts."},
            {"id": "c", "text": "Magic."},
        ],
        "ranking": ["b", ["a", "c"]],
        "annotator": "x",
        "margin": 1.0,
    },
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "margin": 0.5},
    {"chosen": "The sky is blue.", "rejected": "The sky is green."},
    {
        "prompt": [{"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Go."}],
    },
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi\n\nAssistant: Go."},
    {
        "instruction": "Name a color.",
        "completions": [
            {
                "response": "Red.",
                "annotations": {"helpfulness": {"Rating": "4"}, "honesty": {"Rating": "5"}},
            },
            {
                "response": "Seven.",
                "annotations": {"helpfulness": {"Rating": "1"}, "honesty": {"Rating": "N/A"}},
            },
            {"response": "Blue.", "overall_score": 8},
        ],
    },
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def paths_of(obj, prefix=()):
    """Every (container path) inside a JSON value, to pick a place to mutate."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths_of(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths_of(v, (*prefix, i))


@st.composite
def near_valid(draw):
    """A valid record of some format with one to three small mutations."""
    rec = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        places = list(paths_of(rec))
        where = draw(st.sampled_from(places))
        if not where:
            continue
        parent = rec
        for key in where[:-1]:
            parent = parent[key]
        key = where[-1]
        action = draw(st.sampled_from(["delete", "replace", "empty", "duplicate"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(json_values)
        elif action == "empty":
            parent[key] = type(parent[key])() if isinstance(parent[key], (str, list, dict)) else ""
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return rec


def check_error(e: DataError, path: Path) -> None:
    assert e.path == str(path), e
    assert str(e).startswith(str(path)), e
    if e.line is None:  # file-level problems only
        assert any(
            s in e.message for s in ("no records found", "no valid records", "expected a JSON list")
        ), e


def read_or_error(path: Path, **kw) -> list | None:
    try:
        return read_preferences(path, **kw)
    except DataError as e:
        check_error(e, path)
        return None


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".txt"]))
def test_arbitrary_bytes(tmp_path, data, suffix):
    f = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    f.write_bytes(data)
    read_or_error(f)
    read_or_error(f, skip_invalid=True)
    try:
        read_prompts(f)
    except DataError as e:
        assert e.path == str(f)


@FUZZ
@given(lines=st.lists(near_valid() | st.sampled_from(VALID) | json_values, min_size=1, max_size=6))
def test_near_valid_records(tmp_path, lines):
    f = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    for fmt in ("auto", "rankings", "pairs", "hh", "ultrafeedback"):
        strict = read_or_error(f, format=fmt)
        lenient = read_or_error(f, format=fmt, skip_invalid=True)
        if strict is not None:  # everything valid: skipping changes nothing
            assert lenient == strict and lenient.skipped == 0


@FUZZ
@given(lines=st.lists(near_valid(), min_size=1, max_size=4))
def test_json_list_container(tmp_path, lines):
    f = tmp_path / f"{uuid.uuid4().hex}.json"
    f.write_text(json.dumps(lines, indent=1), encoding="utf-8")
    read_or_error(f)
    read_or_error(f, skip_invalid=True)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(near_valid(), min_size=1, max_size=4), to=st.sampled_from(["pairs", "rankings"])
)
def test_convert_leaves_no_output_on_error(tmp_path, lines, to, capsys):
    d = tmp_path / uuid.uuid4().hex
    d.mkdir()
    f = d / "in.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    out = d / ("out.parquet" if to == "pairs" else "out.jsonl")
    rc = rlhfkit_main(["data", "convert", str(f), str(out), "--to", to])
    err = capsys.readouterr().err
    if rc == 0:
        assert out.exists()
    else:
        assert rc == 2 and f"rlhfkit data: error: {f}" in err and "Traceback" not in err
        assert sorted(p.name for p in d.iterdir()) == ["in.jsonl"]  # no output, no temporary


@pytest.mark.parametrize(
    "content", [b"\xff\xfe garbage\n", b'{"prompt": "p", "chosen": "a"}\n', b"[1, 2"]
)
def test_convert_subprocess_bad_input(tmp_path, content):
    f = tmp_path / "in.jsonl"
    f.write_bytes(content)
    out = tmp_path / "out.jsonl"
    p = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "data", "convert", str(f), str(out), "--to", "pairs"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and f"{f}:1: " in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_deeply_nested_json_is_a_data_error(tmp_path):
    f = tmp_path / "deep.jsonl"
    f.write_text("[" * 100000 + "]" * 100000 + "\n" + json.dumps(VALID[0]) + "\n")
    with pytest.raises(DataError) as e:
        read_preferences(f)
    assert e.value.line == 1
    assert len(read_preferences(f, skip_invalid=True)) == 1
    # Deep but decodable nesting inside a field the reader keeps (meta): records or DataError.
    for depth in (500, 950, 3000):
        g = tmp_path / f"deep_meta_{depth}.jsonl"
        extra = "[" * depth + '"x"' + "]" * depth
        g.write_text(json.dumps(VALID[1])[:-1] + f', "extra": {extra}}}\n')
        try:
            read_preferences(g)
        except DataError as err:
            assert err.line == 1
