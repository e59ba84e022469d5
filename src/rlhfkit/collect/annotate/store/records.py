"""What the annotation store keeps, checked before any database is touched: candidate items (from
``rlhfkit generate``'s files), gold rankings, rankings as annotators submit them, tokens."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.errors import DataError, RlhfkitError

FLAG_REASONS = ("harmful", "broken", "spam", "other")
MAX_NAME_CHARS = 64
MAX_RESPONSES = 64
"""responses per item, and so response ids per ranking (the API caps a ranking at this length)"""


class NotFound(RlhfkitError):
    """The item does not exist or is not assigned to this annotator (the two are not told apart)."""


class Conflict(RlhfkitError):
    """The assignment is already finished (submitted or skipped)."""


class InvalidRanking(RlhfkitError):
    """A ranking that does not order exactly the item's responses."""


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    is_admin: bool
    token_hash: str


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so one SHA-256 is enough (no brute force to slow down)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_ranking_shape(ranking: Any) -> list[str | list[str]]:
    """The checks that need no database, in one linear pass: a non-empty list of id strings and
    non-empty tie groups, at most :data:`MAX_RESPONSES` ids in all, none twice. Returns the
    canonical form (singleton tie groups become plain ids).

    Runs *before* the write transaction (issue #20: a 64 KiB ranking of repeated ids used to cost
    seconds of CPU while holding the write lock); the length cap stops it at the first id too many.
    """
    if not isinstance(ranking, list) or not ranking:
        raise InvalidRanking("ranking must be a non-empty list of response ids, best first")
    seen: set[str] = set()
    repeated: set[str] = set()
    out: list[str | list[str]] = []
    n = 0
    for entry in ranking:
        group = entry if isinstance(entry, list) else [entry]
        if not group:
            raise InvalidRanking("empty tie group in ranking")
        for rid in group:
            n += 1
            if n > MAX_RESPONSES:
                raise InvalidRanking(f"ranking lists more than {MAX_RESPONSES} response ids")
            if not isinstance(rid, str):
                raise InvalidRanking(f"ranking entries must be response id strings, got {rid!r}")
            (repeated if rid in seen else seen).add(rid)
        out.append(group[0] if len(group) == 1 else list(group))
    if repeated:
        raise InvalidRanking(
            "ranking must list each response exactly once (repeated: "
            + ", ".join(sorted(repeated))
            + ")"
        )
    return out


def normalize_ranking(ranking: Any, response_ids: list[str]) -> list[str | list[str]]:
    """Check that ``ranking`` orders every response id exactly once; return it in canonical form.

    Canonical: singleton tie groups become plain ids, empty groups are errors. Raises
    :class:`InvalidRanking` with a message naming the missing, repeated or unknown ids. Linear in
    the length of the ranking (:func:`check_ranking_shape`, then set operations).
    """
    out = check_ranking_shape(ranking)
    listed = {rid for g in out for rid in (g if isinstance(g, list) else [g])}
    known = set(response_ids)
    foreign = sorted(listed - known)
    missing = [r for r in response_ids if r not in listed]
    problems = []
    if foreign:
        problems.append(f"not responses of this item: {', '.join(foreign)}")
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if problems:
        raise InvalidRanking(
            "ranking must list each response exactly once (" + "; ".join(problems) + ")"
        )
    return out


def _check_unicode(value: str, what: str, path: Path, line: int) -> None:
    """JSON can spell a lone surrogate (``"\\ud800"``), which is no Unicode text: SQLite (UTF-8)
    cannot store it, so refuse it here with the place rather than fail later with a traceback."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(
            f"{what} holds a lone surrogate ({value[e.start]!a} at character {e.start}), "
            "which is not valid Unicode text",
            path,
            line,
        ) from None


def content_hash(
    prompt: str, responses: list[dict[str, str]], prompt_messages: list[Any] | None = None
) -> str:
    """sha256 of an item's prompt (its messages, for a conversation) and responses (ids and
    texts): the same record, wherever it comes from, is the same item."""
    record: dict[str, Any] = {"prompt": prompt, "responses": responses}
    if prompt_messages is not None:
        record["prompt"] = prompt_messages
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def validate_candidate(
    obj: Any, path: Path, line: int
) -> tuple[str, list[dict[str, str]], list[Any] | None]:
    """One candidates record checked for the store (:func:`rlhfkit.data.candidates.parse_candidate`
    with 2 to :data:`MAX_RESPONSES` responses, and text SQLite can hold): the prompt's text (what
    annotators read), the responses, and the prompt's messages when it is a conversation (kept, so
    that the export stays conversational for a reward model's chat template)."""
    from rlhfkit.data.candidates import parse_candidate

    group = parse_candidate(obj, path, line, min_responses=2, max_responses=MAX_RESPONSES)
    responses = [{"id": r.id, "text": r.text} for r in group.responses]
    messages = group.prompt if isinstance(group.prompt, list) else None
    _check_unicode(group.prompt_text, "'prompt'", path, line)
    for j, r in enumerate(responses):
        _check_unicode(r["id"], f"responses[{j}].id", path, line)
        _check_unicode(r["text"], f"responses[{j}].text", path, line)
    return group.prompt_text, responses, messages


@dataclass(frozen=True)
class GoldRecord:
    """One line of a gold file: the item (by id, or by the content of its prompt and responses)
    and its known ranking."""

    item_id: int | None
    content_hash: str | None
    ranking: Any
    note: str | None
    where: str
    """``file:line`` it was read from"""


def read_gold(path: str | Path) -> list[GoldRecord]:
    """Read a gold file: JSONL, one ``{"item_id", "ranking", "note"?}`` or one native ranking
    record ``{"prompt", "responses", "ranking"}`` (matched to the item imported from the same
    prompt and responses) per line. Checks the shape only; :meth:`Store.set_gold_records` checks
    the rankings against the items."""
    from rlhfkit.runtime.io import iter_jsonl

    path = Path(path)
    out = []
    for line, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or "ranking" not in obj:
            raise DataError(
                'expected {"item_id", "ranking"} or {"prompt", "responses", "ranking"}', path, line
            )
        note = obj.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > 1000):
            raise DataError("'note' must be a string of at most 1000 characters", path, line)
        if "item_id" in obj:
            item_id = obj["item_id"]
            if (
                isinstance(item_id, bool)
                or not isinstance(item_id, int)
                or not 1 <= item_id < 2**63
            ):
                raise DataError(
                    f"'item_id' must be a positive integer, got {item_id!r}", path, line
                )
            out.append(GoldRecord(item_id, None, obj["ranking"], note, f"{path}:{line}"))
        else:
            prompt, responses, messages = validate_candidate(obj, path, line)
            digest = content_hash(prompt, responses, messages)
            out.append(GoldRecord(None, digest, obj["ranking"], note, f"{path}:{line}"))
    if not out:
        raise DataError("no gold records found", path)
    return out


@dataclass(frozen=True)
class CandidateItem:
    """One validated record of a candidates file, ready to insert."""

    prompt: str
    responses_json: str
    content_hash: str
    """identifies the item whatever file or line it came from: a re-import adds nothing"""
    source: str
    """``file:line`` it was read from"""
    prompt_messages_json: str | None = None
    """a conversational prompt's messages (JSON), None for plain text"""


def read_candidates(path: str | Path) -> list[CandidateItem]:
    """Read and validate a whole candidates JSONL file (``{"prompt", "responses"}`` per line)
    without touching any database: a bad line raises ``DataError`` naming the file and line."""
    from rlhfkit.runtime.io import iter_jsonl

    path = Path(path)
    items = []
    for line, obj in iter_jsonl(path):
        prompt, responses, messages = validate_candidate(obj, path, line)
        items.append(
            CandidateItem(
                prompt=prompt,
                responses_json=json.dumps(responses, ensure_ascii=False),
                content_hash=content_hash(prompt, responses, messages),
                source=f"{path.name}:{line}",
                prompt_messages_json=None
                if messages is None
                else json.dumps(messages, ensure_ascii=False),
            )
        )
    if not items:
        raise DataError("no records found (expected JSONL with 'prompt' and 'responses')", path)
    return items
