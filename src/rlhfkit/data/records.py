"""The native preference record: a ranking of K responses to one prompt, best first, with ties.

A pair is the K = 2 case. A ranking of K responses without ties stands for K(K-1)/2 ordered pairs
(InstructGPT, Ouyang et al. 2022, §3.5); responses in a tie group are never paired with each other,
because a tie says nothing about which of the two is better (TRL also scores accuracy with a strict
``>``, so a tied pair could never count as correct). A ranking with every response in one tie group
is legal data that holds no comparison: it validates, gives no pair, and the readers and the
annotation export leave it out and count it (:attr:`Ranking.fully_tied`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import DataError


@dataclass
class Response:
    """One candidate response. ``meta`` keeps any extra fields of the record (model name, score,
    the message list of a conversational response) so that converting does not lose them."""

    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_input(self) -> str | list[dict[str, str]]:
        """What a model reads: the assistant's messages of a conversational response, else the
        text (see :mod:`rlhfkit.chat`)."""
        return _messages_or(self.meta.get("messages"), self.text)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.meta:
            d["meta"] = self.meta
        return d


@dataclass
class Ranking:
    """K responses to ``prompt`` ranked best first; an inner list in ``ranking`` is a tie group.

    ``margin`` (optional) is the Bradley-Terry margin applied to every strictly ordered pair:
    loss ``-log σ(r_w - r_l - margin)``. ``weight`` (optional, non-negative, 1 when absent) scales
    the record's share of the training loss (e.g. its annotator's reliability). Construction
    validates the record and raises
    :class:`DataError` if it is inconsistent (see :func:`validate_ranking`).
    """

    prompt: str
    responses: list[Response]
    ranking: list[str | list[str]]
    annotator: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    margin: float | None = None
    weight: float | None = None

    def __post_init__(self) -> None:
        self.ranking = validate_ranking(self)

    # -- views ---------------------------------------------------------------------------------

    def response(self, id: str) -> Response:
        """The response with this id."""
        for r in self.responses:
            if r.id == id:
                return r
        raise KeyError(id)

    def ranks(self) -> list[int]:
        """Rank of each response, in ``responses`` order: 1 = best, a tie group shares one rank,
        and ranks are dense by position in ``ranking`` (``["a", ["b", "c"], "d"]`` → 1, 2, 2, 3)."""
        rank_of: dict[str, int] = {}
        for pos, group in enumerate(self.ranking, start=1):
            for rid in _group_ids(group):
                rank_of[rid] = pos
        return [rank_of[r.id] for r in self.responses]

    def pairs(self) -> list[tuple[Response, Response]]:
        """``(winner, loser)`` responses for every strictly ordered pair (ties excluded)."""
        by_id = {r.id: r for r in self.responses}
        return [(by_id[w], by_id[lo]) for w, lo in ranking_to_pairs(self.ranking)]

    @property
    def model_prompt(self) -> str | list[dict[str, str]]:
        """What a model reads: the messages of a conversational prompt, else the text (see
        :mod:`rlhfkit.chat`)."""
        return _messages_or(self.meta.get("prompt_messages"), self.prompt)

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.model_prompt, list)

    @property
    def has_ties(self) -> bool:
        return any(isinstance(g, list) and len(g) > 1 for g in self.ranking)

    @property
    def fully_tied(self) -> bool:
        """Every response in one tie group: a legal ranking that holds no comparison (no pair)."""
        return len(self.ranking) < 2

    # -- (de)serialization ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The native JSON record (optional fields only when set)."""
        d: dict[str, Any] = {
            "prompt": self.prompt,
            "responses": [r.to_dict() for r in self.responses],
            "ranking": [list(g) if isinstance(g, list) else g for g in self.ranking],
        }
        if self.annotator is not None:
            d["annotator"] = self.annotator
        if self.margin is not None:
            d["margin"] = self.margin
        if self.weight is not None:
            d["weight"] = self.weight
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: Any, path: str | Path | None = None, line: int | None = None) -> Ranking:
        """Parse and fully validate a native record; errors name ``path`` and ``line``."""
        return ranking_from_native(d, path, line)


def _messages_or(messages: Any, text: str) -> str | list[dict[str, str]]:
    """``messages`` if it is a well-formed message list, else ``text``."""
    ok = (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        )
    )
    return [{"role": m["role"], "content": m["content"]} for m in messages] if ok else text


NATIVE_FIELDS = ("prompt", "responses", "ranking", "annotator", "meta", "margin", "weight")


def ranking_from_native(d: Any, path: str | Path | None = None, line: int | None = None) -> Ranking:
    """Build a :class:`Ranking` from a native record ``{"prompt", "responses", "ranking", ...}``.

    Response ids may be strings or integers (integers become strings, in ``responses`` and in
    ``ranking`` alike). Top-level fields other than the native ones are kept in ``meta``. A
    conversational ``prompt`` (a message list) becomes its text rendering, with the messages in
    ``meta["prompt_messages"]``.
    """

    def fail(msg: str) -> DataError:
        return DataError(msg, path, line)

    if not isinstance(d, dict):
        raise fail(f"expected a JSON object (a ranking record), got {_json_type(d)}")
    for key in ("prompt", "responses", "ranking"):
        if key not in d:
            raise fail(f"missing field {key!r} (a ranking record needs prompt, responses, ranking)")
    prompt = d["prompt"]
    prompt_messages = None
    if isinstance(prompt, list):
        # A conversational prompt: model on its text rendering, keep the messages in meta.
        from rlhfkit.data.messages import messages_to_text, parse_messages

        prompt_messages = parse_messages(prompt, "prompt", path, line)
        prompt = messages_to_text(prompt_messages)
    if not isinstance(prompt, str):
        raise fail(
            f"field 'prompt' must be a string or a list of messages, got {_json_type(prompt)}"
        )
    raw_responses = d["responses"]
    if not isinstance(raw_responses, list):
        raise fail(f"field 'responses' must be a list, got {_json_type(raw_responses)}")
    responses: list[Response] = []
    for i, r in enumerate(raw_responses):
        if not isinstance(r, dict):
            raise fail(
                f"responses[{i}] must be an object with 'id' and 'text', got {_json_type(r)}"
            )
        for key in ("id", "text"):
            if key not in r:
                raise fail(f"responses[{i}] is missing field {key!r}")
        rid = _coerce_id(r["id"], f"responses[{i}].id", fail)
        text = r["text"]
        if not isinstance(text, str):
            raise fail(f"responses[{i}].text must be a string, got {_json_type(text)}")
        meta = {k: v for k, v in r.items() if k not in ("id", "text", "meta")}
        if "meta" in r:
            if not isinstance(r["meta"], dict):
                raise fail(f"responses[{i}].meta must be an object, got {_json_type(r['meta'])}")
            meta = {**r["meta"], **meta}
        responses.append(Response(rid, text, meta))
    raw_ranking = d["ranking"]
    if not isinstance(raw_ranking, list):
        raise fail(
            f"field 'ranking' must be a list of ids (best first), got {_json_type(raw_ranking)}"
        )
    ranking: list[str | list[str]] = []
    for i, g in enumerate(raw_ranking):
        if isinstance(g, list):
            ranking.append([_coerce_id(x, f"ranking[{i}] tie group item", fail) for x in g])
        else:
            ranking.append(_coerce_id(g, f"ranking[{i}]", fail))
    annotator = d.get("annotator")
    if annotator is not None and not isinstance(annotator, str):
        if isinstance(annotator, int) and not isinstance(annotator, bool):
            annotator = str(annotator)
        else:
            raise fail(f"field 'annotator' must be a string, got {_json_type(annotator)}")
    meta = d.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise fail(f"field 'meta' must be an object, got {_json_type(meta)}")
    extra = {k: v for k, v in d.items() if k not in NATIVE_FIELDS and k not in meta}
    meta = {**meta, **extra}
    if prompt_messages is not None:
        meta["prompt_messages"] = prompt_messages
    margin = d.get("margin")
    return _build(prompt, responses, ranking, annotator, meta, margin, path, line, d.get("weight"))


def _build(
    prompt: str,
    responses: list[Response],
    ranking: list[str | list[str]],
    annotator: str | None,
    meta: dict[str, Any],
    margin: Any,
    path: str | Path | None,
    line: int | None,
    weight: Any = None,
) -> Ranking:
    """Construct a Ranking, re-raising a validation error with the file and line attached."""
    try:
        return Ranking(
            prompt, responses, ranking, annotator=annotator, meta=meta, margin=margin, weight=weight
        )
    except DataError as e:
        raise DataError(e.message, path, line) from None


def validate_ranking(r: Ranking) -> list[str | list[str]]:
    """Check a ranking record; return its ranking with one-element tie groups unwrapped.

    Errors: wrong types, empty response text, fewer than two responses, duplicate response ids,
    a ranked id that is not a response, a response ranked twice or not at all, a margin that is
    not a finite number, a weight that is not a non-negative finite number. Everything tied is
    valid (it gives no pair; see :attr:`Ranking.fully_tied`).
    """
    if not isinstance(r.prompt, str):
        raise DataError(f"prompt must be a string, got {_json_type(r.prompt)}")
    if not isinstance(r.responses, list):
        raise DataError(f"responses must be a list, got {_json_type(r.responses)}")
    if len(r.responses) < 2:
        raise DataError(f"a ranking needs at least two responses, got {len(r.responses)}")
    seen: set[str] = set()
    for i, resp in enumerate(r.responses):
        if not isinstance(resp, Response):
            raise DataError(f"responses[{i}] must be a Response, got {type(resp).__name__}")
        if not isinstance(resp.id, str) or not resp.id:
            raise DataError(f"responses[{i}].id must be a non-empty string, got {resp.id!r}")
        if not isinstance(resp.text, str):
            raise DataError(f"responses[{i}].text must be a string, got {_json_type(resp.text)}")
        if not resp.text.strip():
            raise DataError(f"response {resp.id!r} has empty text")
        if not isinstance(resp.meta, dict):
            raise DataError(f"responses[{i}].meta must be a dict")
        if resp.id in seen:
            raise DataError(f"duplicate response id {resp.id!r}")
        seen.add(resp.id)
    if not isinstance(r.ranking, list) or not r.ranking:
        raise DataError("ranking must be a non-empty list of response ids, best first")
    ranked: set[str] = set()
    normalized: list[str | list[str]] = []
    for i, group in enumerate(r.ranking):
        if isinstance(group, list):
            if not group:
                raise DataError(f"ranking[{i}] is an empty tie group")
            ids = group
        elif isinstance(group, str):
            ids = [group]
        else:
            raise DataError(
                f"ranking[{i}] must be a response id or a list of tied ids, got {_json_type(group)}"
            )
        for rid in ids:
            if not isinstance(rid, str):
                raise DataError(f"ranking[{i}] contains a non-string id {rid!r}")
            if rid not in seen:
                known = ", ".join(repr(x) for x in sorted(seen))
                raise DataError(f"ranking id {rid!r} is not among the responses ({known})")
            if rid in ranked:
                raise DataError(f"response {rid!r} is ranked twice")
            ranked.add(rid)
        normalized.append(list(ids) if len(ids) > 1 else ids[0])
    missing = [resp.id for resp in r.responses if resp.id not in ranked]
    if missing:
        raise DataError(
            "response(s) not ranked: "
            + ", ".join(repr(m) for m in missing)
            + " (every response must appear in 'ranking' exactly once)"
        )
    if r.annotator is not None and not isinstance(r.annotator, str):
        raise DataError(f"annotator must be a string, got {_json_type(r.annotator)}")
    if not isinstance(r.meta, dict):
        raise DataError(f"meta must be an object, got {_json_type(r.meta)}")
    if r.margin is not None:
        if isinstance(r.margin, bool) or not isinstance(r.margin, (int, float)):
            raise DataError(f"margin must be a number, got {_json_type(r.margin)}")
        if not math.isfinite(r.margin):
            raise DataError(f"margin must be finite, got {r.margin}")
        r.margin = float(r.margin)
    if r.weight is not None:
        if isinstance(r.weight, bool) or not isinstance(r.weight, (int, float)):
            raise DataError(f"weight must be a non-negative number, got {_json_type(r.weight)}")
        if not math.isfinite(r.weight) or r.weight < 0:
            raise DataError(f"weight must be a non-negative finite number, got {r.weight}")
        r.weight = float(r.weight)
    return normalized


def ranking_to_pairs(ranking: Ranking | list[Any]) -> list[tuple[str, str]]:
    """``(winner_id, loser_id)`` for every strictly ordered pair of a ranking (best first).

    ``ranking`` is a list of ids with tie groups as inner lists, or a :class:`Ranking`.
    With K responses and no ties this is K(K-1)/2 pairs; responses in one tie group are never
    paired with each other, so with tie groups of sizes t_i it is K(K-1)/2 - Σ t_i(t_i-1)/2.
    Pairs come in order: winners by position, then losers by position.
    """
    groups = ranking.ranking if isinstance(ranking, Ranking) else ranking
    if not isinstance(groups, list):
        raise DataError(f"a ranking must be a list of ids, got {_json_type(groups)}")
    id_groups: list[list[str]] = []
    seen: set[str] = set()
    for i, g in enumerate(groups):
        ids = _group_ids(g)
        if not ids:
            raise DataError(f"ranking[{i}] is an empty tie group")
        for rid in ids:
            if not isinstance(rid, str):
                raise DataError(f"ranking[{i}] contains a non-string id {rid!r}")
            if rid in seen:
                raise DataError(f"response {rid!r} is ranked twice")
            seen.add(rid)
        id_groups.append(ids)
    pairs: list[tuple[str, str]] = []
    for i, winners in enumerate(id_groups):
        for losers in id_groups[i + 1 :]:
            pairs.extend((w, lo) for w in winners for lo in losers)
    return pairs


def _group_ids(group: Any) -> list[Any]:
    return list(group) if isinstance(group, (list, tuple)) else [group]


def _coerce_id(x: Any, where: str, fail: Any) -> str:
    if isinstance(x, str):
        if not x:
            raise fail(f"{where} must be a non-empty string")
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    raise fail(f"{where} must be a string id, got {_json_type(x)}")


def _json_type(x: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, (int, float)):
        return f"a number ({x!r})"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, list):
        return "a list"
    if isinstance(x, dict):
        return "an object"
    return type(x).__name__
