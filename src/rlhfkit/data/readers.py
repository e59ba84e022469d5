"""Reading preference data in the formats people have: our native rankings, TRL preference pairs
(explicit, implicit and conversational prompts), Anthropic HH-RLHF transcripts, and
UltraFeedback-style per-completion ratings. Every reader returns :class:`Ranking` records.

Format names for ``read_preferences(format=...)`` (``docs/formats.md`` shows a record of each):

- ``rankings`` (alias ``native``): ``{"prompt", "responses": [{"id", "text"}], "ranking"}``.
- ``pairs`` (alias ``trl``): ``{"prompt"?, "chosen", "rejected", "margin"?, "weight"?}``.
- ``hh``: ``{"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": …}``.
- ``ultrafeedback``: ``{"instruction", "completions": [{"response", "annotations"}]}``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from rlhfkit.data.containers import iter_rows
from rlhfkit.data.messages import messages_to_text, parse_messages
from rlhfkit.data.records import Ranking, Response, _build, _json_type, ranking_from_native
from rlhfkit.errors import DataError

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


# -- TRL pairs ---------------------------------------------------------------------------------

PAIR_FIELDS = ("prompt", "chosen", "rejected", "margin", "weight")


def parse_pair(obj: Any, path: Path | None = None, line: int | None = None) -> Ranking:
    """A TRL preference record → a K = 2 :class:`Ranking` with response ids ``chosen`` /
    ``rejected``. Other fields are kept in ``meta``."""
    _require_object(obj, ("chosen", "rejected"), "a pair record", path, line)
    chosen, rejected = obj["chosen"], obj["rejected"]
    meta = _extra_fields(obj, PAIR_FIELDS)
    resp_meta: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    # A string prompt beside full conversations (HuggingFaceH4/ultrafeedback_binarized) repeats
    # the user turn: like TRL's maybe_extract_prompt, take the prompt from the conversations.
    string_prompt_with_conversations = (
        isinstance(obj.get("prompt"), str)
        and isinstance(chosen, list)
        and isinstance(rejected, list)
    )
    if obj.get("prompt") is not None and not string_prompt_with_conversations:
        prompt = obj["prompt"]
        if isinstance(prompt, str):
            for name, val in (("chosen", chosen), ("rejected", rejected)):
                if not isinstance(val, str):
                    raise DataError(
                        f"field {name!r} must be a string when 'prompt' is a string, got {_json_type(val)}",
                        path,
                        line,
                    )
        elif isinstance(prompt, list):
            # Conversational: keep the messages, model on a text rendering of them.
            p_msgs = parse_messages(prompt, "prompt", path, line)
            c_msgs = parse_messages(chosen, "chosen", path, line)
            r_msgs = parse_messages(rejected, "rejected", path, line)
            meta["prompt_messages"] = p_msgs
            resp_meta = ({"messages": c_msgs}, {"messages": r_msgs})
            prompt = messages_to_text(p_msgs)
            chosen = messages_to_text(c_msgs, as_prompt=False)
            rejected = messages_to_text(r_msgs, as_prompt=False)
        else:
            raise DataError(
                f"field 'prompt' must be a string or a list of messages, got {_json_type(prompt)}",
                path,
                line,
            )
    elif isinstance(chosen, str) and isinstance(rejected, str):
        prompt, chosen, rejected = split_implicit_prompt(chosen, rejected, path, line)
        meta["implicit_prompt"] = True
    elif isinstance(chosen, list) and isinstance(rejected, list):
        c_msgs = parse_messages(chosen, "chosen", path, line)
        r_msgs = parse_messages(rejected, "rejected", path, line)
        n = 0
        while n < min(len(c_msgs), len(r_msgs)) and c_msgs[n] == r_msgs[n]:
            n += 1
        if n == len(c_msgs) or n == len(r_msgs):
            raise DataError(
                "chosen and rejected conversations do not diverge (one contains the other)",
                path,
                line,
            )
        meta["prompt_messages"] = c_msgs[:n]
        meta["implicit_prompt"] = True
        resp_meta = ({"messages": c_msgs[n:]}, {"messages": r_msgs[n:]})
        prompt = messages_to_text(c_msgs[:n]) if n else ""
        chosen = messages_to_text(c_msgs[n:], as_prompt=False)
        rejected = messages_to_text(r_msgs[n:], as_prompt=False)
    else:
        raise DataError(
            "fields 'chosen' and 'rejected' must both be strings or both be message lists, got "
            f"{_json_type(chosen)} and {_json_type(rejected)}",
            path,
            line,
        )
    responses = [
        Response("chosen", chosen, resp_meta[0]),
        Response("rejected", rejected, resp_meta[1]),
    ]
    return _pair_ranking(prompt, responses, meta, obj, path, line)


def split_implicit_prompt(
    chosen: str, rejected: str, path: Path | None = None, line: int | None = None
) -> tuple[str, str, str]:
    """Split two full texts into ``(prompt, chosen, rejected)``: the prompt is their longest common
    prefix, cut back so it never ends inside a word and both responses stay non-empty; whitespace
    at the cut goes with the responses (as TRL's ``extract_prompt``: ``"The sky is"``,
    ``" blue."``, ``" green."``)."""
    if chosen == rejected:
        raise DataError("chosen and rejected are identical", path, line)
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    for p in range(n, -1, -1):
        if p and _is_word(chosen[p - 1]) and (_is_word_at(chosen, p) or _is_word_at(rejected, p)):
            continue  # would cut inside a word
        q = len(chosen[:p].rstrip())  # trailing whitespace belongs to the responses
        if chosen[q:].strip() and rejected[q:].strip():
            return chosen[:q], chosen[q:], rejected[q:]
    # Only possible when one response is blank after the shared text.
    raise DataError("after removing the shared prompt, a response is empty", path, line)


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _is_word_at(s: str, i: int) -> bool:
    return i < len(s) and _is_word(s[i])


# -- Anthropic HH-RLHF -------------------------------------------------------------------------

HH_ASSISTANT = "\n\nAssistant:"


def parse_hh(obj: Any, path: Path | None = None, line: int | None = None) -> Ranking:
    """An HH-RLHF record → a K = 2 ranking. The prompt is the transcript up to and including the
    last ``"\\n\\nAssistant:"``; the responses are the rest (leading space kept, so prompt +
    response is the original transcript). Both transcripts must share that prompt."""
    _require_object(obj, ("chosen", "rejected"), "an HH-RLHF record", path, line)
    texts = {}
    for name in ("chosen", "rejected"):
        val = obj[name]
        if not isinstance(val, str):
            raise DataError(
                f"field {name!r} must be a transcript string, got {_json_type(val)}", path, line
            )
        cut = val.rfind(HH_ASSISTANT)
        if cut < 0:
            raise DataError(f"field {name!r} has no '\\n\\nAssistant:' turn", path, line)
        cut += len(HH_ASSISTANT)
        texts[name] = (val[:cut], val[cut:])
    prompt, chosen = texts["chosen"]
    r_prompt, rejected = texts["rejected"]
    if prompt != r_prompt:
        raise DataError(
            "chosen and rejected differ before their last '\\n\\nAssistant:' turn (HH records share "
            "the conversation and differ only in the final response)",
            path,
            line,
        )
    meta = _extra_fields(obj, ("chosen", "rejected", "margin", "weight"))
    responses = [Response("chosen", chosen), Response("rejected", rejected)]
    return _pair_ranking(prompt, responses, meta, obj, path, line)


# -- UltraFeedback -----------------------------------------------------------------------------

UF_TEXT_FIELDS = ("response", "text", "completion")
UF_SCORE_FIELDS = ("fine-grained_score", "overall_score", "score", "rating")


def parse_ultrafeedback(obj: Any, path: Path | None = None, line: int | None = None) -> Ranking:
    """An UltraFeedback-style record → a ranking of its completions with ties.

    A completion's score is the mean of the numeric ``Rating`` of its ``annotations`` aspects
    (``"N/A"`` ignored) — the choice of HuggingFaceH4/ultrafeedback_binarized. Without usable
    annotations, the first present of ``fine-grained_score``, ``overall_score``, ``score``,
    ``rating`` is used. Equal scores (to 6 decimals) are tied. Completions with no score at all
    are left out (counted in ``meta["unrated_completions"]``). Response ids are the completion
    indices ``"0"``, ``"1"``, …; each response's ``meta`` keeps its ``score`` and other fields.
    """
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {_json_type(obj)}", path, line)
    key = "instruction" if "instruction" in obj else "prompt"
    if key not in obj:
        raise DataError("missing field 'instruction' (or 'prompt')", path, line)
    prompt = obj[key]
    if not isinstance(prompt, str):
        raise DataError(f"field {key!r} must be a string, got {_json_type(prompt)}", path, line)
    if "completions" not in obj:
        raise DataError("missing field 'completions'", path, line)
    comps = obj["completions"]
    if not isinstance(comps, list):
        raise DataError(f"field 'completions' must be a list, got {_json_type(comps)}", path, line)
    responses: list[Response] = []
    scores: dict[str, float] = {}
    unrated = 0
    for i, c in enumerate(comps):
        if not isinstance(c, dict):
            raise DataError(f"completions[{i}] must be an object, got {_json_type(c)}", path, line)
        text_key = next((k for k in UF_TEXT_FIELDS if k in c), None)
        if text_key is None:
            raise DataError(f"completions[{i}] is missing field 'response'", path, line)
        text = c[text_key]
        if not isinstance(text, str):
            raise DataError(
                f"completions[{i}].{text_key} must be a string, got {_json_type(text)}", path, line
            )
        score, source = _uf_score(c, i, path, line)
        if score is None:
            unrated += 1
            continue
        rid = str(i)
        extra = _extra_fields(c, (text_key, "annotations", "critique", "custom_system_prompt"))
        responses.append(Response(rid, text, {**extra, "score": score, "score_source": source}))
        scores[rid] = score
    # Best first; equal scores (rounded, so 4.25 from different aspect orders matches) tie.
    levels = sorted({round(s, 6) for s in scores.values()}, reverse=True)
    ranking: list[str | list[str]] = []
    for level in levels:
        group = [rid for rid, s in scores.items() if round(s, 6) == level]
        ranking.append(group if len(group) > 1 else group[0])
    meta = _extra_fields(obj, (key, "completions"))
    if unrated:
        meta["unrated_completions"] = unrated
    if len(responses) < 2:
        raise DataError(
            f"needs at least two rated completions, got {len(responses)} ({unrated} without a rating)",
            path,
            line,
        )
    return _build(prompt, responses, ranking, None, meta, None, path, line)


def _uf_score(
    c: dict[str, Any], i: int, path: Path | None, line: int | None
) -> tuple[float | None, str]:
    ann = c.get("annotations")
    if isinstance(ann, dict) and ann:
        ratings: list[float] = []
        for aspect, val in ann.items():
            for entry in val if isinstance(val, list) else [val]:
                if isinstance(entry, dict) and "Rating" in entry:
                    r = _number(entry["Rating"])
                    if r is None and str(entry["Rating"]).strip().upper() not in ("N/A", "NA", ""):
                        raise DataError(
                            f"completions[{i}].annotations.{aspect}.Rating is not a number: {entry['Rating']!r}",
                            path,
                            line,
                        )
                    if r is not None:
                        ratings.append(r)
        if ratings:
            return sum(ratings) / len(ratings), "annotations"
    for key in UF_SCORE_FIELDS:
        if key in c and c[key] is not None:
            r = _number(c[key])
            if r is None:
                raise DataError(f"completions[{i}].{key} is not a number: {c[key]!r}", path, line)
            return r, key
    return None, ""


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, str):
        try:
            v = float(x.strip())
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None


# -- shared ------------------------------------------------------------------------------------


def _pair_ranking(
    prompt: str,
    responses: list[Response],
    meta: dict[str, Any],
    obj: dict[str, Any],
    path: Path | None,
    line: int | None,
) -> Ranking:
    """The K = 2 ranking ``chosen`` over ``rejected``, with the record's margin and weight."""
    return _build(
        prompt, responses, ["chosen", "rejected"], None, meta, obj.get("margin"), path, line,
        obj.get("weight"),
    )  # fmt: skip


def _require_object(
    obj: Any, fields: tuple[str, ...], what: str, path: Path | None, line: int | None
) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"expected {what} (a JSON object), got {_json_type(obj)}", path, line)
    for key in fields:
        if key not in obj:
            raise DataError(f"missing field {key!r} ({what} needs {', '.join(fields)})", path, line)


def _extra_fields(obj: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
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
