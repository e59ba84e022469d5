"""Writing rankings (native JSONL) and pairs (TRL's ``prompt/chosen/rejected``, JSONL or Parquet).

Both are atomic: the output appears complete or not at all (``rlhfkit.runtime.io.atomic_open``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlhfkit.data.records import Ranking
from rlhfkit.errors import DataError
from rlhfkit.runtime.io import atomic_open

PAIR_FORMATS = ("jsonl", "parquet")


def write_rankings(path: str | Path, rankings: Iterable[Ranking]) -> int:
    """Write native ranking records as JSONL (atomically); returns how many were written."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        raise DataError(
            "rankings are written as JSONL (tie groups do not fit a Parquet column)", path
        )
    n = 0
    with atomic_open(path) as f:
        for rk in rankings:
            f.write(json_line(rk.to_dict()))
            n += 1
    return n


def json_line(obj: Any) -> str:
    """One JSONL line, UTF-8 text as is; a string holding a lone surrogate (legal in JSON as an
    escape, e.g. ``"\\ud800"``, but not encodable as UTF-8) is written escaped instead."""
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj, ensure_ascii=True)
    return line + "\n"


def pair_rows(rankings: Iterable[Ranking]) -> list[dict[str, Any]]:
    """TRL preference rows, one per strictly ordered pair of each ranking (ties give none).

    Conversational when *every* ranking carries its messages (read from conversational data):
    ``prompt`` / ``chosen`` / ``rejected`` are then message lists, as TRL expects; otherwise strings.
    ``margin`` and ``weight`` are included on rows whose ranking has them.
    """
    rankings = list(rankings)
    conversational = bool(rankings) and all(_has_messages(rk) for rk in rankings)
    rows: list[dict[str, Any]] = []
    for rk in rankings:
        for win, lose in rk.pairs():
            if conversational:
                row: dict[str, Any] = {
                    "prompt": rk.meta["prompt_messages"],
                    "chosen": win.meta["messages"],
                    "rejected": lose.meta["messages"],
                }
            else:
                row = {"prompt": rk.prompt, "chosen": win.text, "rejected": lose.text}
            if rk.margin is not None:
                row["margin"] = rk.margin
            if rk.weight is not None:
                row["weight"] = rk.weight
            rows.append(row)
    return rows


def _has_messages(rk: Ranking) -> bool:
    return (
        isinstance(rk.meta.get("prompt_messages"), list)
        and bool(rk.meta["prompt_messages"])
        and all(isinstance(r.meta.get("messages"), list) for r in rk.responses)
    )


def write_pairs(path: str | Path, rankings: Iterable[Ranking], format: str | None = None) -> int:
    """Write TRL ``prompt/chosen/rejected`` pairs (see :func:`pair_rows`) atomically as ``jsonl``
    or ``parquet`` (default: by the file extension); returns the number of pairs written."""
    path = Path(path)
    if format is None:
        format = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "jsonl"
    if format not in PAIR_FORMATS:
        raise DataError(f"unknown pairs format {format!r} (choose jsonl or parquet)", path)
    rows = pair_rows(rankings)
    if format == "jsonl":
        with atomic_open(path) as f:
            for row in rows:
                f.write(json_line(row))
        return len(rows)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "writing Parquet needs the optional 'pyarrow' package: pip install 'rlhfkit[datasets]'",
            path,
        ) from None

    columns: dict[str, list[Any]] = {
        k: [row[k] for row in rows] for k in ("prompt", "chosen", "rejected")
    }
    for optional in ("margin", "weight"):
        if any(optional in row for row in rows):
            columns[optional] = [row.get(optional) for row in rows]
    try:
        if rows:
            table = pa.Table.from_pydict(columns)
        else:
            table = pa.table(
                {k: pa.array([], pa.string()) for k in ("prompt", "chosen", "rejected")}
            )
    except (pa.ArrowException, UnicodeError) as e:
        raise DataError(
            f"cannot store these pairs in Parquet ({e}); write JSONL instead", path
        ) from None
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
    return len(rows)
