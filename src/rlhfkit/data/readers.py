"""Reading preference data in the formats people have: our native rankings, TRL preference pairs
(explicit, implicit and conversational prompts), Anthropic HH-RLHF transcripts, and
UltraFeedback-style per-completion ratings. Every reader returns :class:`Ranking` records.

Format names for ``read_preferences(format=...)`` (``docs/formats.md`` shows a record of each):

- ``rankings`` (alias ``native``): ``{"prompt", "responses": [{"id", "text"}], "ranking"}``.
- ``pairs`` (alias ``trl``): ``{"prompt"?, "chosen", "rejected", "margin"?, "weight"?}``.
- ``hh``: ``{"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": …}``.
- ``ultrafeedback``: ``{"instruction", "completions": [{"response", "annotations"}]}``.

This module reads files and tells formats apart; each format's record parser is in its own module
(:mod:`rlhfkit.data.pair_formats` for pairs and HH, :mod:`rlhfkit.data.ultrafeedback`; the native
record in :mod:`rlhfkit.data.records`).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from rlhfkit.data.containers import iter_rows
from rlhfkit.data.fields import jsonable
from rlhfkit.data.pair_formats import (
    HH_ASSISTANT,
    PAIR_FIELDS,
    parse_hh,
    parse_pair,
    split_implicit_prompt,
)
from rlhfkit.data.records import Ranking, _json_type, ranking_from_native
from rlhfkit.data.ultrafeedback import UF_SCORE_FIELDS, UF_TEXT_FIELDS, parse_ultrafeedback
from rlhfkit.errors import DataError

# Re-exported: the parsers and their constants were defined here before the formats had modules.
__all__ = [
    "ALIASES",
    "FORMATS",
    "HH_ASSISTANT",
    "PAIR_FIELDS",
    "PARSERS",
    "UF_SCORE_FIELDS",
    "UF_TEXT_FIELDS",
    "Preferences",
    "detect_record_format",
    "error_kind",
    "jsonable",
    "parse_hh",
    "parse_pair",
    "parse_ultrafeedback",
    "read_preferences",
    "read_rankings",
    "split_implicit_prompt",
]

FORMATS = ("rankings", "pairs", "hh", "ultrafeedback")
ALIASES = {"native": "rankings", "trl": "pairs", "anthropic": "hh", "hh-rlhf": "hh", "auto": "auto"}


class Preferences(list[Ranking]):
    """The records read by :func:`read_preferences`: a plain ``list`` of :class:`Ranking`, plus
    ``format`` (the one detected or named), ``skipped`` (records left out with
    ``skip_invalid=True``), ``errors`` (the first few skipped records' :class:`DataError`),
    ``reasons`` (skipped count per kind of problem) and ``fully_tied`` (valid records with every
    response tied, so no comparison: always left out, never an error). ``report()`` says it in
    one paragraph."""

    MAX_LINES_PER_REASON = 5

    def __init__(self, items: list[Ranking], path: Path, format: str):
        super().__init__(items)
        self.path = path
        self.format = format
        self.skipped = 0
        self.reasons: Counter[str] = Counter()
        self.lines_by_reason: dict[str, list[int]] = {}
        self.errors: list[DataError] = []
        self.fully_tied = 0
        self.fully_tied_lines: list[int] = []

    def _leave_out_fully_tied(self, line: int | None) -> None:
        self.fully_tied += 1
        if len(self.fully_tied_lines) < self.MAX_LINES_PER_REASON and line is not None:
            self.fully_tied_lines.append(line)

    def _skip(self, err: DataError) -> None:
        self.skipped += 1
        kind = error_kind(err.message)
        self.reasons[kind] += 1
        lines = self.lines_by_reason.setdefault(kind, [])
        if len(lines) < self.MAX_LINES_PER_REASON and err.line is not None:
            lines.append(err.line)
        if len(self.errors) < 20:
            self.errors.append(err)

    def report(self) -> str:
        """``"read 98 records (pairs) from F; skipped 2: 1× missing field … (line 4); …"``, and
        ``"; left out 1 fully tied (no ordered pair) (line 9)"`` when there were such records."""
        head = f"read {len(self)} records ({self.format}) from {self.path}"
        if self.skipped:
            parts = [
                f"{n}× {kind}{_where(self.lines_by_reason.get(kind, []), n)}"
                for kind, n in self.reasons.most_common()
            ]
            head += f"; skipped {self.skipped} invalid: " + "; ".join(parts)
        if self.fully_tied:
            head += (
                f"; left out {self.fully_tied} fully tied (every response tied: no ordered pair)"
                + _where(self.fully_tied_lines, self.fully_tied)
            )
        return head


def _where(lines: list[int], n: int) -> str:
    """`` (lines 4, 9, …)``: the first few lines of ``n`` records, or nothing without lines."""
    if not lines:
        return ""
    more = ", …" if n > len(lines) else ""
    return f" (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}{more})"


def error_kind(message: str) -> str:
    """A message with its specifics (quoted ids, numbers) blanked, to count problems by kind."""
    kind = re.sub(r"\(column \d+\)", "", message)
    kind = re.sub(r"'[^']*'|\"[^\"]*\"", "…", kind)
    kind = re.sub(r"\([^)]*\)", "", kind)
    kind = re.sub(r"\[\d+\]", "[…]", kind)
    kind = re.sub(r"\d+(\.\d+)?", "N", kind)
    return re.sub(r"\s+", " ", kind).strip()


def read_preferences(
    path: str | Path, format: str = "auto", skip_invalid: bool = False
) -> Preferences:
    """Read preference records from ``path`` (JSONL, JSON list, Parquet, or a saved ``datasets``
    directory) in the given format, or the format of its first recognizable record (``auto``).

    Raises :class:`DataError` naming the file and line at the first invalid record, or with
    ``skip_invalid=True`` skips invalid records and counts them in the result (see
    :class:`Preferences`; ``list(result)`` or just iterating gives the rankings). Records with
    every response tied are valid but hold no comparison: they are always left out and counted
    in ``result.fully_tied``, with or without ``skip_invalid``.
    """
    path = Path(path)
    fmt = ALIASES.get(format, format)
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"unknown format {format!r} (choose auto, {', '.join(FORMATS)})", path)
    rows = list(iter_rows(path))
    if not rows:
        raise DataError("no records found (the file is empty)", path)
    if fmt == "auto":
        fmt = _detect(rows, path)
    parse = PARSERS[fmt]
    out = Preferences([], path, fmt)
    for line, obj in rows:
        try:
            if isinstance(obj, DataError):
                raise obj
            record = parse(obj, path, line)
            if record.fully_tied:
                out._leave_out_fully_tied(line)
            else:
                out.append(record)
        except DataError as e:
            if not skip_invalid:
                raise
            out._skip(e)
        except RecursionError:
            err = DataError("record nested too deeply", path, line)
            if not skip_invalid:
                raise err from None
            out._skip(err)
    if not out:
        what = "no record with an ordered pair" if out.fully_tied else "no valid records"
        raise DataError(f"{what}: {out.report()}", path)
    return out


def read_rankings(path: str | Path, skip_invalid: bool = False) -> Preferences:
    """Read a native rankings file (JSONL or any container :func:`read_preferences` reads)."""
    return read_preferences(path, format="rankings", skip_invalid=skip_invalid)


# -- format detection --------------------------------------------------------------------------


def detect_record_format(obj: Any) -> str | None:
    """The format a single record looks like, or None."""
    if not isinstance(obj, dict):
        return None
    if "responses" in obj and "ranking" in obj:
        return "rankings"
    if "completions" in obj and ("instruction" in obj or "prompt" in obj):
        return "ultrafeedback"
    if "chosen" in obj and "rejected" in obj:
        chosen = obj["chosen"]
        if "prompt" not in obj and isinstance(chosen, str) and _looks_like_hh(chosen):
            return "hh"
        return "pairs"
    return None


def _looks_like_hh(text: str) -> bool:
    return "Human:" in text and HH_ASSISTANT in text


def _detect(rows: list[tuple[int, Any]], path: Path) -> str:
    first_obj: tuple[int, Any] | None = None
    for line, obj in rows:
        if isinstance(obj, DataError):
            continue
        fmt = detect_record_format(obj)
        if fmt is not None:
            return fmt
        if first_obj is None:
            first_obj = (line, obj)
    if first_obj is None:
        raise rows[0][1]  # nothing decodes: report the first decoding error
    line, obj = first_obj
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:10]) or "none"
        hint = " (a prompt-only file? read it with read_prompts)" if set(obj) == {"prompt"} else ""
        raise DataError(
            "cannot tell the preference format: expected 'responses'+'ranking' (rankings), "
            "'chosen'+'rejected' (pairs / hh) or 'instruction'+'completions' (ultrafeedback); "
            f"found fields {keys}{hint}",
            path,
            line,
        )
    raise DataError(f"expected a JSON object per record, got {_json_type(obj)}", path, line)


def _parse_native(obj: Any, path: Path | None, line: int | None) -> Ranking:
    rk = ranking_from_native(obj, path, line)
    rk.meta = jsonable(rk.meta)
    for r in rk.responses:
        r.meta = jsonable(r.meta)
    return rk


PARSERS = {
    "rankings": _parse_native,
    "pairs": parse_pair,
    "hh": parse_hh,
    "ultrafeedback": parse_ultrafeedback,
}
