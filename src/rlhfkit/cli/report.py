"""``rlhfkit report RUN_DIR``: write RUN_DIR/report.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from rlhfkit.cli._common import parse_config


@dataclass
class ReportArgs:
    run_dir: Annotated[Path, tyro.conf.Positional]
    """PPO run directory (holds metrics.jsonl, samples.jsonl)."""
    out: Path | None = None
    """Where to write the HTML (default RUN_DIR/report.html)."""
    title: str | None = None
    """Page title."""


def main(argv: list[str]) -> int:
    args = parse_config(
        ReportArgs,
        argv,
        prog="rlhfkit report",
        description="Render report.html for a PPO run directory.",
        yaml_config=False,
    )
    from rlhfkit.report import render_run_report

    path = render_run_report(args.run_dir, args.out, args.title)
    print(path)
    return 0
