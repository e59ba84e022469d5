"""How rlhfkit talks (docs/cli.md): results on stdout; messages through the ``rlhfkit`` logger and
progress bars on stderr; ``--quiet`` and ``--log-level`` say how much of that to show, and
``NO_COLOR`` turns colour off (rich, which draws the bars and tables, honours it).

The level is kept in ``RLHFKIT_LOG_LEVEL`` too, so that processes rlhfkit starts (the demo's PPO
runs, sampling workers) and the ranks a launcher starts speak the same way.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = ("debug", "info", "warning", "error")
"""The values of ``--log-level``; ``--quiet`` means ``warning``."""

ENV_LEVEL = "RLHFKIT_LOG_LEVEL"

_ROOT = "rlhfkit"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected stream)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    """``rlhfkit train-rm: message`` (``warning:`` / ``error:`` before the message at those
    levels), as the commands have always written."""

    def format(self, record: logging.LogRecord) -> str:
        who = record.name.replace(".", " ", 1)
        level = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
        return f"{who}: {level}{record.getMessage()}"


def _root() -> logging.Logger:
    root = logging.getLogger(_ROOT)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        root.addHandler(handler)
        root.propagate = False
        root.setLevel(_level_from(os.environ.get(ENV_LEVEL)))
    return root


def _level_from(name: str | None) -> int:
    return getattr(logging, (name or "info").upper(), logging.INFO)


def get_logger(command: str) -> logging.Logger:
    """The logger of one command or stage, e.g. ``get_logger("train-rm")``: ``info`` for what a
    run is doing, ``warning`` for what a user should look at."""
    _root()
    return logging.getLogger(f"{_ROOT}.{command}")


def configure(level: str | None = None, quiet: bool = False) -> str:
    """Set how much rlhfkit says: ``level`` (one of :data:`LEVELS`), else ``warning`` with
    ``quiet``, else ``$RLHFKIT_LOG_LEVEL``, else ``info``. Also quiets or opens up the libraries
    underneath (``TRANSFORMERS_VERBOSITY``, ``ACCELERATE_LOG_LEVEL``, unless already set) and, at
    ``error``, Python warnings. Returns the level."""
    name = (level or ("warning" if quiet else os.environ.get(ENV_LEVEL)) or "info").lower()
    if name not in LEVELS:
        from rlhfkit.errors import ConfigError

        raise ConfigError(f"--log-level must be one of {', '.join(LEVELS)}, got {name!r}")
    os.environ[ENV_LEVEL] = name
    _root().setLevel(_level_from(name))
    lib = {"debug": "info", "error": "error"}.get(name, "warning")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", lib)
    os.environ.setdefault("ACCELERATE_LOG_LEVEL", lib.upper())
    if name == "error":
        import warnings

        warnings.simplefilter("ignore")
    return name


def info_enabled() -> bool:
    """Whether informational output is wanted: progress bars and per-stage lines are drawn only
    then (not with ``--quiet`` or ``--log-level warning``/``error``)."""
    return _root().isEnabledFor(logging.INFO)
