"""Prompt files: one prompt per record, for generation and PPO (TRL's prompt-only datasets)."""

from __future__ import annotations

from pathlib import Path

from rlhfkit.data.containers import iter_rows
from rlhfkit.data.messages import Message, messages_to_text, parse_messages
from rlhfkit.errors import DataError


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a JSONL / JSON list / Parquet / saved-dataset file whose records have a ``prompt``
    field: a string, or a conversational message list (rendered with :func:`messages_to_text`).
    A ``*.txt`` file is read as one prompt per non-blank line. Errors name the file and line."""
    return [messages_to_text(p) if isinstance(p, list) else p for p in read_prompt_inputs(path)]


def read_prompt_inputs(path: str | Path) -> list[str | list[Message]]:
    """Like :func:`read_prompts`, but a conversational prompt stays a list of messages, for a
    model to render with its chat template (:mod:`rlhfkit.chat`)."""
    path = Path(path)
    if path.suffix.lower() == ".txt" and path.is_file():
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8 ({e.reason})", path) from None
        prompts = [ln.strip() for ln in lines if ln.strip()]
        if not prompts:
            raise DataError("no prompts found (the file is empty)", path)
        return prompts
    prompts: list[str | list[Message]] = []
    for line, obj in iter_rows(path):
        if isinstance(obj, DataError):
            raise obj
        if not isinstance(obj, dict):
            raise DataError(
                f"expected a JSON object with a 'prompt' field, got {type(obj).__name__}",
                path,
                line,
            )
        if "prompt" not in obj:
            raise DataError("missing field 'prompt'", path, line)
        p = obj["prompt"]
        if isinstance(p, list):
            p = parse_messages(p, "prompt", path, line)
            if not messages_to_text(p).strip():
                raise DataError("empty prompt", path, line)
        elif not isinstance(p, str):
            raise DataError("field 'prompt' must be a string or a list of messages", path, line)
        elif not p.strip():
            raise DataError("empty prompt", path, line)
        prompts.append(p)
    if not prompts:
        raise DataError("no prompts found (the file is empty)", path)
    return prompts
