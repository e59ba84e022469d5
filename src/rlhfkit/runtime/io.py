"""Small file helpers shared by every stage: JSONL reading with line numbers, and atomic writes
so that an error or a kill never leaves a half-written output file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from rlhfkit.errors import ConfigError, DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file (1-based lines).

    Raises :class:`DataError` naming the file and line for undecodable bytes or bad JSON.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("expected a JSONL file, found a directory", path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not valid UTF-8 ({e.reason} at byte {e.start})", path, lineno
                ) from None
            if lineno == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", path, lineno) from None
            yield lineno, obj


@contextlib.contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it is fsynced and renamed over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Write records as JSONL atomically; returns how many were written."""
    n = 0
    with atomic_open(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically (indented, UTF-8)."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``path``, then rename it into place.

    If ``path`` exists it is replaced only after the new directory is complete, so a kill at any
    moment leaves either the old or the new directory, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_interrupted_dir(path: str | Path) -> bool:
    """Undo a replacement by :func:`atomic_dir` that a kill cut between its two renames.

    Replacing moves ``path`` to ``.NAME.old`` and then the new directory to ``path``; a kill in
    between leaves only ``.NAME.old``. This moves it back (the previous, complete directory), and
    returns True if it did. Call it before reading a directory that atomic_dir may have replaced.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.is_dir():
        os.replace(old, path)
        return True
    return False


def clear_previous_run(
    out: str | Path, names: Iterable[str], *, resume: bool, overwrite: bool, delete: bool
) -> None:
    """Refuse to start a second run in ``out`` on top of a first one.

    ``names`` are the entries a run leaves in ``out`` (logs, checkpoints). Two runs mixed in one
    directory read as one, and a later ``--resume`` would continue from whichever checkpoint is
    newest, possibly the other run's. So unless the run resumes, existing entries are an error
    that names them, or, with ``overwrite``, are deleted (where ``delete``: on the main process
    only, the others wait for it).
    """
    out = Path(out)
    stale = [out / name for name in names if (out / name).exists()]
    if resume or not stale:
        return
    if not overwrite:
        raise ConfigError(
            f"{out} holds a previous run ({', '.join(p.name for p in stale)}); pass --resume to "
            "continue it or --overwrite to start afresh"
        )
    if delete:
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


class MetricsLogger:
    """Append-only ``metrics.jsonl`` writer: one JSON object per line, flushed every write.

    ``enabled=False`` (non-main processes) makes every call a no-op, so callers need no ``if``.
    """

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._f: IO[str] | None = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def log(self, record: dict[str, Any]) -> None:
        if self._f is None:
            return
        self._f.write(json.dumps(record, ensure_ascii=False, default=_json_default) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def truncate_jsonl(path: str | Path, last_step: int) -> None:
    """Drop the lines of a JSONL log written after ``last_step`` (a crashed run's tail, before it
    resumes from the checkpoint of ``last_step``): a line is kept when it parses as an object
    whose ``step`` is missing or ≤ ``last_step``; a line torn by the crash goes. Atomic."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash
        step = obj.get("step") if isinstance(obj, dict) else None
        if isinstance(obj, dict) and (not isinstance(step, int) or step <= last_step):
            kept.append(line)
    with atomic_open(path) as f:
        f.write("".join(line + "\n" for line in kept))


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link ``src`` to ``dst`` (no copy of a large file), or copy where links fail."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
