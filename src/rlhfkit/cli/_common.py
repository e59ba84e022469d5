"""Shared CLI plumbing: a typed dataclass config *is* the command line (tyro), and any option can
also come from a YAML file given with ``--config FILE.yaml`` (command-line flags win)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, TypeVar

from rlhfkit.errors import ConfigError

T = TypeVar("T")


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--config F`` / ``--config=F`` out of argv (tyro must not see it)."""
    rest: list[str] = []
    config: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a YAML file path")
            config = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
            i += 1
            continue
        rest.append(arg)
        i += 1
    return config, rest


def _chat_template_shorthands(argv: list[str]) -> list[str]:
    """``--no-chat-template`` means ``--chat-template never``; a bare ``--chat-template`` (no value
    after it: the flag of earlier versions of ``generate``) means ``--chat-template always``."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--no-chat-template":
            out += ["--chat-template", "never"]
        elif arg == "--chat-template" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out += ["--chat-template", "always"]
        else:
            out.append(arg)
    return out


def _renamed_flags(cls: type, argv: list[str], prog: str) -> list[str]:
    """Old option names (``rlhfkit.runtime.renamed``) read as the new ones, with a deprecation
    line on stderr: ``--lr-schedule X``, ``--lr-schedule=X``."""
    from rlhfkit.runtime.renamed import RENAMED_OPTIONS, renamed_value

    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        old = name.replace("-", "_")
        new = RENAMED_OPTIONS.get(old)
        if new is None or new not in fields or old in fields:
            out.append(arg)
            i += 1
            continue
        flag = "--" + new.replace("_", "-")
        eprint(
            f"{prog}: --{name} is deprecated, use {flag} (the old name goes in the next release)"
        )
        if not eq and i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
        out += [flag, str(renamed_value(old, value))]
        i += 1
    return out


def load_yaml_config(cls: type[T], path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of config fields (``kl_coef`` or ``kl-coef``); unknown keys are errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: skip the type checks
        hints = {}
    from rlhfkit.runtime.renamed import RENAMED_OPTIONS, renamed_value

    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        new = RENAMED_OPTIONS.get(name)
        if name not in fields and new in fields:
            eprint(f"{path}: option {key!r} is deprecated, use {new!r} (the old name goes in the next release)")  # fmt: skip
            name, value = new, renamed_value(name, value)
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{path}: unknown option {key!r} (known: {known})")
        problem = _type_problem(hints.get(name), value)
        if problem:
            raise ConfigError(f"{path}: option {key!r}: {problem}, got {str(value)[:60]!r}")
        out[name] = value
    return out


def _type_problem(annotation: Any, value: Any) -> str | None:
    """What is wrong with a YAML value for a field of simple type (None if it fits or the type is
    not a simple one)."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(a, value) for a in args]
        return None if any(p is None for p in problems) else " or ".join(filter(None, problems))
    if origin is typing.Literal:
        return None if value in args else f"expected one of {', '.join(map(repr, args))}"
    if annotation is type(None):
        return None if value is None else "expected null"
    if annotation is bool:
        return None if isinstance(value, bool) else "expected true or false"
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "expected an integer"
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "expected a number"
    if annotation is str:
        return None if isinstance(value, str) else "expected a string"
    return None


def parse_config(
    cls: type[T],
    argv: list[str],
    prog: str,
    description: str | None = None,
    yaml_config: bool = True,
) -> T:
    """Parse ``argv`` into a ``cls`` instance; ``--config F.yaml`` supplies defaults.

    Fields without a default stay required unless the YAML file gives them.
    """
    import tyro

    config_path, argv = _split_config_flag(argv) if yaml_config else (None, argv)
    if "chat_template" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
        argv = _chat_template_shorthands(argv)
    argv = _renamed_flags(cls, argv, prog)
    default = None
    if config_path is not None:
        values = load_yaml_config(cls, config_path)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in values:
                kwargs[f.name] = values[f.name]
            elif f.default is not dataclasses.MISSING:
                kwargs[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                kwargs[f.name] = f.default_factory()
            else:
                kwargs[f.name] = tyro.MISSING
        try:
            default = cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{config_path}: {e}") from None
    if yaml_config and description is not None:
        description += "\n\nAny option can also be given in a YAML file with --config FILE.yaml."
    try:
        return tyro.cli(
            cls,
            args=argv,
            prog=prog,
            description=description,
            default=default,
        )
    except ValueError as e:  # raised by __post_init__ validation
        raise ConfigError(str(e)) from None


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr)


def check_sampling(
    count_flag: str, count: int, max_new_tokens: int, temperature: float, top_p: float,
    batch_size: int,
) -> None:  # fmt: skip
    """The sampling options of ``generate`` and ``best-of-n``, checked before any model loads
    (``count_flag``: ``-k`` or ``-n``, the responses per prompt)."""
    if count < 1:
        raise ValueError(f"{count_flag} must be at least 1")
    if temperature <= 0:
        raise ValueError("--temperature must be > 0")
    if not 0 < top_p <= 1:
        raise ValueError("--top-p must be in (0, 1]")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("--max-new-tokens and --batch-size must be at least 1")
