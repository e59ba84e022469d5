"""What a report reads from a PPO run directory: ``metrics.jsonl``, ``samples.jsonl``,
``config.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import DataError
from rlhfkit.runtime.io import iter_jsonl


@dataclass
class Run:
    """What the report needs from a run directory."""

    name: str
    path: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(x, y) of a metric over updates; x is the ``step`` field (or the line index)."""
        xs, ys = [], []
        for i, row in enumerate(self.metrics):
            v = row.get(key)
            if isinstance(v, int):
                v = float(v) if abs(v) < 2**1000 else math.nan  # a huge JSON int overflows float
            if isinstance(v, float) and math.isfinite(v):
                xs.append(float(row.get("step", i + 1)))
                ys.append(v)
        return xs, ys

    def has(self, key: str) -> bool:
        return any(key in row for row in self.metrics)


def _stepped_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a run's log, each with an integer ``step`` or none (a clear error for a
    line that is not an object or whose step is not an integer, ``null`` included)."""
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise DataError("expected a JSON object per line", path, lineno)
        step = row.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or abs(step) > 2**53:
            raise DataError(f"'step' must be an integer, got {str(step)[:40]!r}", path, lineno)
        yield row


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read ``metrics.jsonl`` (required), ``samples.jsonl`` and ``config.json`` (optional)."""
    path = Path(path)
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise DataError("not a run directory: metrics.jsonl is missing", path)
    run = Run(name=name or path.name, path=path)
    run.metrics.extend(_stepped_rows(metrics_path))
    samples_path = path / "samples.jsonl"
    if samples_path.is_file():
        run.samples.extend(_stepped_rows(samples_path))
    config_path = path / "config.json"
    if config_path.is_file():
        try:
            run.config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"invalid JSON: {e}", config_path) from None
    return run
