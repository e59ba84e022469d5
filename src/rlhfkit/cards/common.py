"""What every model card is made of: Hub ids, the reproducing command, tables of numbers, the
versions, and the card itself (``huggingface_hub.ModelCard``: YAML metadata, then Markdown)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_CACHE_DIR = re.compile(r"^(models|datasets)--(.+)$")


def hub_id(name: str | None, kind: str = "models") -> str | None:
    """The Hub repo a model or data set came from, or None when that is not known.

    A name that is no local path is taken as a Hub id (``gpt2``, ``org/name``); a local path is one
    only inside the Hub's download cache (``…/models--org--name/snapshots/…``, ``kind`` ``models``
    or ``datasets``); any other local path (a model trained here) has none.
    """
    if not name:
        return None
    path = Path(name).expanduser()
    if path.exists():
        for part in reversed(path.resolve().parts):
            m = _CACHE_DIR.match(part)
            if m and m.group(1) == kind:
                return m.group(2).replace("--", "/")
        return None
    return name if _HUB_ID.match(name) and not name.endswith((".jsonl", ".json", ".gz")) else None


def command_line(prog: str, config: Any) -> str:
    """The command that makes ``config`` (a dataclass whose fields are the command's options):
    ``prog`` with every option that differs from its default, in the fields' order."""
    words: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return " ".join([prog, *(shlex.quote(w) for w in words)])


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from rlhfkit import __version__

    parts = [f"rlhfkit {__version__}"]
    for pkg in ("transformers", "torch", "accelerate"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def _number(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _card(metadata: dict[str, Any], title: str, sections: list[tuple[str, str]], intro: str) -> Any:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**{k: v for k, v in metadata.items() if v})
    body = [f"# {title}", "", intro, ""]
    for heading, text in sections:
        body += [f"## {heading}", "", text.strip(), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
