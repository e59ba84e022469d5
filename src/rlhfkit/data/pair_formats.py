"""The K = 2 preference formats: TRL preference pairs (explicit, implicit and conversational
prompts) and Anthropic HH-RLHF transcripts, each record read as a :class:`Ranking` of ``chosen``
over ``rejected``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.data.fields import extra_fields, require_object
from rlhfkit.data.messages import messages_to_text, parse_messages
from rlhfkit.data.records import Ranking, Response, _build, _json_type
from rlhfkit.errors import DataError

# -- TRL pairs ---------------------------------------------------------------------------------

PAIR_FIELDS = ("prompt", "chosen", "rejected", "margin", "weight")


def parse_pair(obj: Any, path: Path | None = None, line: int | None = None) -> Ranking:
    """A TRL preference record → a K = 2 :class:`Ranking` with response ids ``chosen`` /
    ``rejected``. Other fields are kept in ``meta``."""
    require_object(obj, ("chosen", "rejected"), "a pair record", path, line)
    chosen, rejected = obj["chosen"], obj["rejected"]
    meta = extra_fields(obj, PAIR_FIELDS)
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
    require_object(obj, ("chosen", "rejected"), "an HH-RLHF record", path, line)
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
    meta = extra_fields(obj, ("chosen", "rejected", "margin", "weight"))
    responses = [Response("chosen", chosen), Response("rejected", rejected)]
    return _pair_ranking(prompt, responses, meta, obj, path, line)


# -- both formats ----------------------------------------------------------------------------


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
