"""Conversational records (lists of ``{"role", "content"}`` messages) and their text rendering.

rlhfkit models take plain text. A conversation is rendered as text like this: a single user
message is just its content (so a one-turn conversational prompt equals the plain prompt); anything
else is each message as ``"Role: content"`` joined by blank lines, and a prompt whose last message
is not the assistant's ends with ``"\\n\\nAssistant:"`` so the response follows naturally. The
original messages are kept in ``meta`` so a chat template can be applied later instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.errors import DataError

Message = dict[str, str]


def parse_messages(x: Any, field: str, path: str | Path | None, line: int | None) -> list[Message]:
    """Check a message list (``role`` and string ``content`` in every message) and return it."""
    if not isinstance(x, list) or not x:
        raise DataError(f"field {field!r} must be a non-empty list of messages", path, line)
    out: list[Message] = []
    for i, m in enumerate(x):
        if not isinstance(m, dict):
            raise DataError(
                f"{field}[{i}] must be a message object with 'role' and 'content'", path, line
            )
        for key in ("role", "content"):
            if key not in m:
                raise DataError(f"{field}[{i}] is missing {key!r}", path, line)
            if not isinstance(m[key], str):
                raise DataError(f"{field}[{i}].{key} must be a string", path, line)
        out.append({"role": m["role"], "content": m["content"]})
    return out


def messages_to_text(messages: list[Message], as_prompt: bool = True) -> str:
    """Plain-text rendering of a conversation (see the module docstring)."""
    if len(messages) == 1 and messages[0]["role"] in (("user",) if as_prompt else ("assistant",)):
        return messages[0]["content"]
    text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    if as_prompt and messages[-1]["role"] != "assistant":
        text += "\n\nAssistant:"
    return text
