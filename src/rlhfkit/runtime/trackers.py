"""Experiment trackers (TensorBoard, Weights & Biases, trackio, MLflow) through Accelerate's
tracker integration, with TRL's ``--report-to`` spelling.

A trainer passes :func:`tracker_kwargs` to :func:`rlhfkit.runtime.distributed.make_accelerator`
(``Accelerator(log_with=...)``), then :func:`start_trackers` (``accelerator.init_trackers`` with the
run's config as hyperparameters) hands a :class:`Trackers` to its
:class:`rlhfkit.runtime.io.MetricsLogger`, which sends every ``metrics.jsonl`` record to the
trackers with the record's ``step``, so the trackers show the same names at the same steps as the
file. See docs/tracking.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from rlhfkit.errors import ConfigError

ReportTo = Literal["none", "tensorboard", "wandb", "trackio", "mlflow"]
"""A value of ``--report-to``."""

TRACKERS: tuple[str, ...] = ("tensorboard", "wandb", "trackio", "mlflow")
"""The trackers ``--report-to`` accepts (besides ``none``), in TRL's spelling."""

LOGGING_DIR = "runs"
"""TensorBoard's event files go to ``OUT/runs`` (as in transformers' Trainer)."""

PROJECT = "rlhfkit"
"""The W&B / trackio project and MLflow experiment, unless ``WANDB_PROJECT``,
``TRACKIO_PROJECT`` or ``MLFLOW_EXPERIMENT_NAME`` says otherwise."""

# tracker -> (module it imports, the extra of rlhfkit that installs it)
_NEEDS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "mlflow": ("mlflow", "mlflow"),
}


def resolve_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """The trackers to use (``none`` removed, duplicates dropped, order kept).

    Raises :class:`ConfigError` for an unknown name, for ``none`` together with a tracker, and,
    in one line that names the extra to install, for a tracker whose package is missing.
    """
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    unknown = [n for n in names if n not in (*TRACKERS, "none")]
    if unknown:
        raise ConfigError(
            f"--report-to: unknown tracker {unknown[0]!r} (choose from none, {', '.join(TRACKERS)})"
        )
    chosen = list(dict.fromkeys(n for n in names if n != "none"))
    if chosen and "none" in names:
        raise ConfigError(f"--report-to: 'none' together with {', '.join(chosen)}")
    for name in chosen:
        module, extra = _NEEDS[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed installation
            found = False
        if not found:
            raise ConfigError(
                f"--report-to {name} needs the {module} package: pip install 'rlhfkit[{extra}]'"
            )
    return chosen


def tracker_kwargs(
    report_to: str | Sequence[str] | None, out: str | Path, run_name: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``make_accelerator``: ``log_with`` (one Accelerate tracker per name,
    TensorBoard writing to ``OUT/runs``), or nothing when no tracker is asked for."""
    names = resolve_report_to(report_to)
    if not names:
        return {}
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    run = run_name or Path(out).resolve().name
    make = {
        # run_name "" so the event files sit in OUT/runs itself, beside no other run's
        "tensorboard": lambda: TensorBoardTracker("", Path(out) / LOGGING_DIR),
        "wandb": lambda: WandBTracker(os.environ.get("WANDB_PROJECT", PROJECT), name=run),
        "trackio": lambda: _trackio_tracker(os.environ.get("TRACKIO_PROJECT", PROJECT), run),
        "mlflow": lambda: MLflowTracker(experiment_name=PROJECT, run_name=run),
    }
    return {"log_with": [make[n]() for n in names]}


def _trackio_tracker(project: str, run: str) -> Any:
    """Accelerate's trackio tracker, finishing with ``trackio.finish()``: that also forgets the
    run, which trackio's exit hook would otherwise finish a second time, printing to stdout."""
    from accelerate.tracking import TrackioTracker, on_main_process

    class Tracker(TrackioTracker):
        @on_main_process
        def finish(self) -> None:
            import trackio

            trackio.finish()

    return Tracker(project, name=run)


class Trackers:
    """The started trackers of one run: :meth:`log` sends a ``metrics.jsonl`` record, at its
    ``step``; :meth:`finish` ends the run in every tracker. Trackers that print (trackio does)
    print to stderr: stdout is for results."""

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator

    def log(self, record: dict[str, Any]) -> None:
        values = tracker_values(record)
        if values:
            with _stdout_to_stderr():
                self.accelerator.log(values, step=record.get("step"))

    def finish(self) -> None:
        with _stdout_to_stderr():
            self.accelerator.end_training()


def start_trackers(accelerator: Any, config: Any) -> Trackers | None:
    """``accelerator.init_trackers`` with ``config`` (a dataclass) as the hyperparameters, on the
    main process; None when the accelerator has no tracker (or on the other processes)."""
    if not getattr(accelerator, "log_with", None) or not accelerator.is_main_process:
        return None
    from rlhfkit import __version__

    params = {**hyperparameters(config), "rlhfkit_version": __version__}
    with _stdout_to_stderr():
        accelerator.init_trackers(PROJECT, config=params)
    return Trackers(accelerator)


def hyperparameters(config: Any) -> dict[str, Any]:
    """A config dataclass as values every tracker stores: numbers, strings, booleans and None
    (lists become comma-separated strings)."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        elif not isinstance(value, (bool, int, float, str, type(None))):
            value = str(value)
        out[key] = value
    return out


def tracker_values(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` record, without ``step`` (it is the trackers' step);
    None (an interval with nothing to average) and text are left out."""
    values: dict[str, float] = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)) or hasattr(value, "item"):
            values[key] = float(value)
    return values


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield
