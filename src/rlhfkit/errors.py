"""Errors meant for people: they say which file, which line, and what was expected.

The CLI catches :class:`RlhfkitError`, prints its message (no traceback) and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class RlhfkitError(Exception):
    """Base class of every error caused by user input or configuration (not by a bug)."""


class DataError(RlhfkitError):
    """Bad input data. ``str(err)`` reads ``FILE:LINE: message`` (or ``FILE: message``)."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        return where + self.message


class ConfigError(RlhfkitError):
    """A configuration that cannot work (bad value, inconsistent options, resume mismatch)."""
