"""Field checks and JSON-safe copies shared by the preference readers of every format."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlhfkit.data.records import _json_type
from rlhfkit.errors import DataError


def require_object(
    obj: Any, fields: tuple[str, ...], what: str, path: Path | None, line: int | None
) -> None:
    """Raise unless ``obj`` is a JSON object with every one of ``fields`` (``what`` names the
    record kind in the message)."""
    if not isinstance(obj, dict):
        raise DataError(f"expected {what} (a JSON object), got {_json_type(obj)}", path, line)
    for key in fields:
        if key not in obj:
            raise DataError(f"missing field {key!r} ({what} needs {', '.join(fields)})", path, line)


def extra_fields(obj: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """Fields a format does not use, made JSON-safe, to keep in ``meta``."""
    return {str(k): jsonable(v) for k, v in obj.items() if k not in known}


def jsonable(x: Any) -> Any:
    """``x`` with anything JSON cannot hold (dates, bytes, NaN from Parquet) turned into strings."""
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if hasattr(x, "isoformat"):
        return x.isoformat()
    return str(x)
