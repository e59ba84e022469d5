"""Atomic writes: nothing half-written, and a replacement cut by a kill is recoverable."""

import os

import pytest

from rlhfkit.errors import DataError
from rlhfkit.runtime.io import (
    atomic_dir,
    atomic_open,
    iter_jsonl,
    recover_interrupted_dir,
    write_jsonl,
)


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_write_jsonl_and_iter_jsonl_round_trip_with_line_numbers(tmp_path):
    p = tmp_path / "a.jsonl"
    write_jsonl(p, [{"a": 1}, {"b": "é"}])
    assert list(iter_jsonl(p)) == [(1, {"a": 1}), (2, {"b": "é"})]
    p.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(DataError, match=r"a.jsonl:3: invalid JSON"):
        list(iter_jsonl(p))


def test_atomic_dir_replaces_whole_directory(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "w.bin").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "w.bin").write_text("half")
        raise RuntimeError("killed")
    assert (target / "w.bin").read_text() == "v1"
    with atomic_dir(target) as d:
        (d / "w.bin").write_text("v2")
    assert (target / "w.bin").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_interrupted_replacement_is_recovered(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "w.bin").write_text("v1")
    # simulate a kill between the two renames of a replacement
    os.replace(target, tmp_path / ".model.old")
    assert recover_interrupted_dir(target)
    assert (target / "w.bin").read_text() == "v1"
    assert not recover_interrupted_dir(target)
    # atomic_dir recovers it by itself before replacing again
    os.replace(target, tmp_path / ".model.old")
    with atomic_dir(target) as d:
        (d / "w.bin").write_text("v2")
    assert (target / "w.bin").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
