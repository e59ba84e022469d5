"""The one reader of candidate and response files (what ``rlhfkit generate`` and PPO write, what
``annotate import``, ``world rank``, ``score``, ``detect`` and reward-model normalization read).

Two record kinds, one per JSONL line (every other field is kept in ``fields``):

- a **candidate group**: ``{"prompt", "responses": [{"id", "text"}, ...]}``; a response may also
  be a bare string (numbered ``r0``, ``r1``, ...); ids are strings or integers, unique in the group;
- a **response row**: ``{"prompt", "response"}`` (PPO's ``samples.jsonl``, held-out outputs), with
  optional ``step`` (an integer) and ``has_eos`` (true or false).

A prompt is a string or a conversation (a list of ``{"role", "content"}`` messages, kept as such
for a model's chat template); a row's response may be the assistant's messages too. Every error
names the file, the line and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.data.messages import Message, messages_to_text, parse_messages
from rlhfkit.data.records import Response
from rlhfkit.errors import DataError

Prompt = str | list[Message]


@dataclass
class CandidateGroup:
    """K responses to one prompt, not yet ranked."""

    prompt: Prompt
    responses: list[Response]
    line: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        return prompt_text(self.prompt)


@dataclass
class ResponseRow:
    """One response to one prompt (a sample)."""

    prompt: Prompt
    response: str | list[Message]
    line: int | None = None
    step: int | None = None
    has_eos: bool | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        return prompt_text(self.prompt)

    @property
    def response_text(self) -> str:
        r = self.response
        return messages_to_text(r, as_prompt=False) if isinstance(r, list) else r


def prompt_text(prompt: Prompt) -> str:
    """A prompt as text (a conversation as ``"Role: content"`` lines)."""
    return messages_to_text(prompt) if isinstance(prompt, list) else prompt


def parse_prompt(
    x: Any, path: str | Path | None, line: int | None, *, allow_empty: bool = False
) -> Prompt:
    """A record's ``prompt``: a string, or a list of messages."""
    if isinstance(x, list):
        messages = parse_messages(x, "prompt", path, line)
        if not allow_empty and not messages_to_text(messages).strip():
            raise DataError("'prompt' is empty", path, line)
        return messages
    if not isinstance(x, str):
        raise DataError(
            f"'prompt' must be a string or a list of messages, got {type(x).__name__}", path, line
        )
    if not allow_empty and not x.strip():
        raise DataError("'prompt' must be a non-empty string", path, line)
    return x


def parse_candidate(
    obj: Any,
    path: str | Path | None = None,
    line: int | None = None,
    *,
    min_responses: int = 1,
    max_responses: int | None = None,
    allow_empty_prompt: bool = False,
) -> CandidateGroup:
    """Validate one candidate-group record (see the module docstring)."""
    if not isinstance(obj, dict):
        raise DataError(
            f"expected an object with 'prompt' and 'responses', got {type(obj).__name__}",
            path,
            line,
        )
    if "prompt" not in obj:
        raise DataError("missing field 'prompt'", path, line)
    prompt = parse_prompt(obj["prompt"], path, line, allow_empty=allow_empty_prompt)
    raw = obj.get("responses")
    what = "a list of" + (f" at least {min_responses}" if min_responses > 1 else "")
    if not isinstance(raw, list) or len(raw) < max(min_responses, 1):
        raise DataError(f'\'responses\' must be {what} {{"id", "text"}} objects', path, line)
    if max_responses is not None and len(raw) > max_responses:
        raise DataError(
            f"{len(raw)} responses: a record holds at most {max_responses} (split it)", path, line
        )
    responses: list[Response] = []
    for j, r in enumerate(raw):
        if isinstance(r, str):  # a bare list of texts: number them
            r = {"id": f"r{j}", "text": r}
        if not isinstance(r, dict) or not isinstance(r.get("text"), str):
            raise DataError(f"responses[{j}] must be an object with a string 'text'", path, line)
        rid = r.get("id", f"r{j}")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
            raise DataError(f"responses[{j}].id must be a non-empty string", path, line)
        meta = {k: v for k, v in r.items() if k not in ("id", "text")}
        responses.append(Response(str(rid), r["text"], meta))
    ids = [r.id for r in responses]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(
            f"response ids must be unique within a record (repeated: {', '.join(dup)})", path, line
        )
    rest = {k: v for k, v in obj.items() if k not in ("prompt", "responses")}
    return CandidateGroup(prompt, responses, line, rest)


def parse_response_row(
    obj: Any, path: str | Path | None = None, line: int | None = None
) -> ResponseRow:
    """Validate one response row (see the module docstring); its prompt may be empty."""
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, line)
    if "response" not in obj:
        raise DataError("missing field 'response'", path, line)
    prompt = parse_prompt(obj.get("prompt", ""), path, line, allow_empty=True)
    response = obj["response"]
    if isinstance(response, list):
        response = parse_messages(response, "response", path, line)
    elif not isinstance(response, str):
        raise DataError(f"'response' must be a string, got {type(response).__name__}", path, line)
    step, has_eos = step_and_eos(obj, path, line)
    rest = {k: v for k, v in obj.items() if k not in ("prompt", "response", "step", "has_eos")}
    return ResponseRow(prompt, response, line, step, has_eos, rest)


def step_and_eos(
    obj: dict[str, Any], path: str | Path | None, line: int | None
) -> tuple[int | None, bool | None]:
    """A record's optional ``step`` (the PPO update that sampled it) and ``has_eos``."""
    step = obj.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise DataError(f"'step' must be an integer, got {step!r}", path, line)
    has_eos = obj.get("has_eos")
    if has_eos is not None and not isinstance(has_eos, bool):
        raise DataError("'has_eos' must be true or false", path, line)
    return step, has_eos


def iter_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line, object)`` of a JSONL file (the first bad line raises, naming it)."""
    from rlhfkit.runtime.io import iter_jsonl

    yield from iter_jsonl(Path(path))


def read_candidates(
    path: str | Path, *, min_responses: int = 2, max_responses: int | None = None
) -> list[CandidateGroup]:
    """Every candidate group of a JSONL file, validated; an empty file is an error."""
    path = Path(path)
    groups = [
        parse_candidate(obj, path, line, min_responses=min_responses, max_responses=max_responses)
        for line, obj in iter_records(path)
    ]
    if not groups:
        raise DataError("no records found (expected JSONL with 'prompt' and 'responses')", path)
    return groups


def read_response_rows(path: str | Path) -> list[ResponseRow]:
    """Every response row of a JSONL file, validated; an empty file is an error."""
    path = Path(path)
    rows = [parse_response_row(obj, path, line) for line, obj in iter_records(path)]
    if not rows:
        raise DataError("no records found (expected JSONL with 'prompt' and 'response')", path)
    return rows
