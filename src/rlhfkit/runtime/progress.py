"""The progress bar of a long step (rich), the same for every trainer: label, bar, done/total, a
line of live figures, elapsed and remaining time, on stderr (results go to stdout)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(
    label: str, total: int, completed: int = 0, enabled: bool = True
) -> tuple[Any, Any]:
    """``(progress, task)``: use ``with progress:`` (or ``start()`` / ``stop()``) and
    ``progress.update(task, completed=..., info="loss 0.42")``. Disabled (or with ``--quiet``,
    ``--log-level warning``), it draws nothing."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from rlhfkit.runtime.logs import info_enabled

    progress = Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not (enabled and info_enabled()), transient=False,
    )  # fmt: skip
    return progress, progress.add_task(label, total=total, completed=completed, info="")


def track(items: Iterable[T], label: str, total: int) -> Iterator[T]:
    """Yield ``items`` while a :func:`progress_bar` counts them (``total`` expected), for a long
    step that is a loop over prompts (``generate``, ``best-of-n``)."""
    progress, task = progress_bar(label, total)
    with progress:
        for item in items:
            yield item
            progress.advance(task)
