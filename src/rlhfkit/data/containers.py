"""Reading rows out of the files preference data comes in: JSONL, a JSON list, Parquet, and a
Hugging Face ``datasets`` dataset saved with ``save_to_disk``.

Every row comes with its position: the 1-based line for JSONL and JSON lists, the 1-based row for
Parquet and datasets. A row that cannot be decoded is yielded as a :class:`DataError` in place of
the object, so a caller that skips invalid records can carry on past it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.errors import DataError

Row = tuple[int, Any]  # (line or row number, decoded object or DataError)


def iter_rows(path: str | Path) -> Iterator[Row]:
    """``(position, object_or_DataError)`` for every record of ``path``, chosen by what it is:
    a directory → ``datasets.load_from_disk``; ``*.parquet`` → pyarrow; ``*.json`` holding a list →
    its elements; anything else → JSONL. File-level problems raise :class:`DataError` at once."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        yield from _iter_dataset_dir(path)
    elif path.suffix.lower() in (".parquet", ".pq"):
        yield from _iter_parquet(path)
    elif path.suffix.lower() == ".json" and _first_char(path) == "[":
        yield from _iter_json_array(path)
    elif path.suffix.lower() == ".json" and (one := _single_json_object(path)) is not None:
        yield 1, one  # a pretty-printed single record
    else:
        yield from _iter_jsonl(path)


def _first_char(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head[:1]


def _single_json_object(path: Path) -> dict[str, Any] | None:
    """The object a ``*.json`` file holds if it is exactly one JSON object (else None: JSONL)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return obj if isinstance(obj, dict) else None


def _iter_jsonl(path: Path) -> Iterator[Row]:
    """JSONL lines; ``*.gz`` is decompressed on the fly (HH-RLHF ships as ``train.jsonl.gz``)."""
    opener: Any = gzip.open if path.suffix.lower() == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for raw in f:
                lineno += 1
                yield from _decode_line(path, lineno, raw)
    except (OSError, EOFError, zlib.error) as e:  # a corrupt or truncated gzip stream
        raise DataError(f"cannot decompress ({e})", path, lineno + 1) from None


def _decode_line(path: Path, lineno: int, raw: bytes) -> Iterator[Row]:
    """Zero rows (blank line) or one: the decoded object, or the DataError saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        yield lineno, DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", path, lineno)
        return
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        return
    try:
        yield lineno, json.loads(text)
    except json.JSONDecodeError as e:
        yield lineno, DataError(f"invalid JSON: {e.msg} (column {e.colno})", path, lineno)
    except RecursionError:
        yield lineno, DataError("invalid JSON: nested too deeply", path, lineno)


def _iter_json_array(path: Path) -> Iterator[Row]:
    """Elements of a top-level JSON list, each with the line it starts on."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 ({e.reason})", path, line) from None
    decoder = json.JSONDecoder()
    n = len(text)

    def skip_ws(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    def line_of(i: int) -> int:
        return text.count("\n", 0, i) + 1

    i = skip_ws(0)
    if i >= n or text[i] != "[":
        raise DataError("expected a JSON list of records", path, line_of(i))
    i = skip_ws(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        start = i
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            # Inside one document a broken element ends the list: there is no next record to find.
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path, e.lineno) from None
        except RecursionError:
            raise DataError("invalid JSON: nested too deeply", path, line_of(start)) from None
        yield line_of(start), obj
        i = skip_ws(i)
        if i < n and text[i] == ",":
            i = skip_ws(i + 1)
            continue
        if i < n and text[i] == "]":
            if skip_ws(i + 1) < n:
                raise DataError(
                    "unexpected text after the JSON list", path, line_of(skip_ws(i + 1))
                )
            return
        raise DataError("invalid JSON: expected ',' or ']' in the list", path, line_of(i))


def _iter_parquet(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet needs the optional 'pyarrow' package: pip install 'rlhfkit[datasets]'",
            path,
        ) from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for anything unreadable
        raise DataError(f"not a readable Parquet file ({e})", path) from None
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                row += 1
                yield row, rec
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read Parquet data after row {row} ({e})", path) from None


def _iter_dataset_dir(path: Path) -> Iterator[Row]:
    """A dataset saved with ``Dataset.save_to_disk`` (a ``DatasetDict`` must name its split)."""
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if p.is_dir())
        choices = ", ".join(str(path / s) for s in splits)
        raise DataError(
            f"this is a DatasetDict with splits {splits}: pass one split directory ({choices})",
            path,
        )
    if not (path / "dataset_info.json").is_file() and not (path / "state.json").is_file():
        raise DataError(
            "expected a file, or a dataset directory written by datasets' save_to_disk "
            "(no dataset_info.json / state.json here)",
            path,
        )
    try:
        import datasets
    except ImportError:
        raise DataError(
            "reading a saved dataset directory needs the optional 'datasets' package: "
            "pip install 'rlhfkit[datasets]'",
            path,
        ) from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"cannot load the dataset directory ({e})", path) from None
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"expected one dataset split, got {type(ds).__name__}", path)
    yield from enumerate(ds, start=1)
