"""``rlhfkit data convert | stats``: preference data between formats, and what is in a file."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from rlhfkit.cli._common import parse_config
from rlhfkit.errors import ConfigError

InputFormat = Literal["auto", "rankings", "pairs", "hh", "ultrafeedback"]


@dataclass
class ConvertArgs:
    input: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="IN")]
    """Input file (JSONL, JSON list, Parquet) or a datasets directory saved with save_to_disk."""
    output: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Output file. Pairs: *.parquet writes Parquet, anything else JSONL. Rankings: JSONL."""
    to: Literal["pairs", "rankings"]
    """pairs: TRL prompt/chosen/rejected, one row per strictly ordered pair (ties left out);
    rankings: rlhfkit's native ranking records. A record's margin and weight are kept (each pair
    of a ranking gets the ranking's)."""
    format: InputFormat = "auto"
    """Input format; auto detects it from the first recognizable record."""
    skip_invalid: bool = False
    """Skip invalid records (counted in a report on stderr) instead of stopping at the first."""


@dataclass
class StatsArgs:
    input: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="FILE")]
    """Preference file (JSONL, JSON list, Parquet) or a saved datasets directory."""
    format: InputFormat = "auto"
    """Input format; auto detects it from the first recognizable record."""
    skip_invalid: bool = False
    """Skip invalid records (counted in the output) instead of stopping at the first."""
    json: bool = False
    """Print the statistics as one JSON object."""


SUBCOMMANDS = {
    "convert": "convert preference data between formats (rankings <-> TRL pairs, HH, UltraFeedback)",
    "stats": "counts, K distribution, ties, pairs, annotators and lengths of a preference file",
}


def _usage() -> str:
    lines = [
        "usage: rlhfkit data SUBCOMMAND [options]   (rlhfkit data SUBCOMMAND --help)",
        "",
        "subcommands:",
    ]
    lines += [f"  {name.ljust(8)}  {help_}" for name, help_ in SUBCOMMANDS.items()]
    lines += [
        "",
        "examples:",
        "  rlhfkit data convert rankings.jsonl pairs.parquet --to pairs",
        "  rlhfkit data convert hh.jsonl rankings.jsonl --to rankings --skip-invalid",
        "  rlhfkit data stats rankings.jsonl --json",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    sub, rest = argv[0], argv[1:]
    if sub == "convert":
        return convert(rest)
    if sub == "stats":
        return stats(rest)
    raise ConfigError(f"unknown subcommand {sub!r} (choose: {', '.join(SUBCOMMANDS)})")


def convert(argv: list[str]) -> int:
    args = parse_config(
        ConvertArgs,
        argv,
        prog="rlhfkit data convert",
        description="Convert preference data: IN (any supported format) -> OUT as TRL pairs or "
        "native rankings. OUT is written atomically: on any error it is not created or changed.",
        yaml_config=False,
    )
    from rlhfkit.data import read_preferences, write_pairs, write_rankings

    data = read_preferences(args.input, format=args.format, skip_invalid=args.skip_invalid)
    if data.skipped or data.fully_tied:
        print(data.report(), file=sys.stderr)
    if args.to == "pairs":
        n = write_pairs(args.output, data)
        what = f"{n} pairs"
    else:
        n = write_rankings(args.output, data)
        what = f"{n} rankings"
    print(f"wrote {what} from {len(data)} {data.format} records to {args.output}")
    return 0


def stats(argv: list[str]) -> int:
    args = parse_config(
        StatsArgs,
        argv,
        prog="rlhfkit data stats",
        description="Statistics of a preference file: records, prompts, K distribution, ties, "
        "pairs, annotators, prompt and response lengths in words and characters.",
        yaml_config=False,
    )
    from rlhfkit.data import read_preferences
    from rlhfkit.data.stats import format_stats, preference_stats

    data = read_preferences(args.input, format=args.format, skip_invalid=args.skip_invalid)
    result = {
        "file": str(args.input),
        "format": data.format,
        "skipped_invalid": data.skipped,
        "fully_tied_left_out": data.fully_tied,
    }
    result.update(preference_stats(data))
    if args.json:
        if data.skipped:
            result["skipped_reasons"] = dict(data.reasons)
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(format_stats(result))
        if data.skipped or data.fully_tied:
            print(data.report(), file=sys.stderr)
    return 0
