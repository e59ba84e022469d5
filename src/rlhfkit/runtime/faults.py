"""Fault injection, so that crash safety is tested on the real command, not on a mock.

Set ``RLHFKIT_FAULTS`` to a comma-separated list of ``ACTION@POINT:STEPS`` entries, e.g.::

    RLHFKIT_FAULTS="kill@checkpoint-save:4"        # SIGKILL while checkpoint step-4 is being written
    RLHFKIT_FAULTS="nan@reward:2-3,nan@loss:5"     # NaN rewards in updates 2 and 3, NaN loss in 5

``ACTION`` is ``kill`` (the process sends itself SIGKILL: no ``finally``, no ``atexit``, exactly
like the OOM killer or a pre-empted node) or ``nan`` (the trainer turns the value at that point
into NaN). ``STEPS`` is a step, ``A-B`` or ``*``; the step is the 1-based optimizer step
(``train-rm``) or PPO update being computed, or the step number of the checkpoint being saved.
An optional ``@rank`` suffix restricts an entry to one process (``kill@update:3@1``).

Points: ``update`` (mid-step: right after the first optimizer step of the update, before anything
is saved), ``checkpoint-save`` (inside the atomic save: files partly written, not yet renamed),
``after-checkpoint`` (the checkpoint is complete, the next step has not started), ``loss`` and
``reward`` (``nan`` only; ``reward`` is PPO's score).

Unset (the normal case) every call is a dictionary lookup that returns False.
"""

from __future__ import annotations

import functools
import os
import signal
from dataclasses import dataclass

ENV = "RLHFKIT_FAULTS"
POINTS = ("update", "checkpoint-save", "after-checkpoint", "loss", "reward")


@dataclass(frozen=True)
class Fault:
    action: str
    point: str
    first: int
    last: int
    rank: int | None

    def matches(self, action: str, point: str, step: int, rank: int) -> bool:
        return (
            self.action == action
            and self.point == point
            and self.first <= step <= self.last
            and (self.rank is None or self.rank == rank)
        )


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """Parse the ``RLHFKIT_FAULTS`` syntax; a malformed entry is an error (a typo must not make a
    crash test pass silently)."""
    faults = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        try:
            action, rest = entry.split("@", 1)
            rank: int | None = None
            if "@" in rest:
                rest, rank_s = rest.rsplit("@", 1)
                rank = int(rank_s)
            point, steps = rest.split(":", 1)
            if steps == "*":
                first, last = 0, 2**62
            elif "-" in steps:
                a, b = steps.split("-", 1)
                first, last = int(a), int(b)
            else:
                first = last = int(steps)
        except ValueError:
            raise ValueError(
                f"{ENV}: cannot parse {entry!r} (expected ACTION@POINT:STEPS)"
            ) from None
        if action not in ("kill", "nan") or point not in POINTS:
            raise ValueError(
                f"{ENV}: {entry!r}: action must be kill or nan, point one of {', '.join(POINTS)}"
            )
        faults.append(Fault(action, point, first, last, rank))
    return tuple(faults)


@functools.lru_cache(maxsize=4)
def _faults(spec: str) -> tuple[Fault, ...]:
    return parse_faults(spec)


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def inject_nan(point: str, step: int) -> bool:
    """True if a NaN is to be injected at ``point`` in ``step``."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    return any(f.matches("nan", point, step, _rank()) for f in _faults(spec))


def kill_point(point: str, step: int) -> None:
    """SIGKILL this process if a ``kill`` fault names ``point`` at ``step``."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    if any(f.matches("kill", point, step, _rank()) for f in _faults(spec)):
        os.kill(os.getpid(), signal.SIGKILL)
