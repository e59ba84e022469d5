"""Quality control in ``rlhfkit annotate``: the ``gold`` subcommand and the quality part of
``stats`` (see docs/annotation.md, "Quality control").

rlhfkit annotate gold --db ann.db gold.jsonl                     # {"item_id", "ranking"} per line
rlhfkit annotate gold --db ann.db --item 7 --ranking '["r2", ["r0", "r3"], "r1"]'
rlhfkit annotate gold --db ann.db --remove 7
rlhfkit annotate gold --db ann.db --list
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import tyro

from rlhfkit.errors import ConfigError


@dataclasses.dataclass
class GoldConfig:
    """Mark items whose right ranking you know as gold: each annotator's agreement with them shows in
    stats and on the admin page, and counts in their reliability. Gold items go to every annotator."""

    db: Path
    """The annotation database."""
    file: Annotated[Path | None, tyro.conf.Positional] = None
    """JSONL of gold rankings, one per line: {"item_id", "ranking", "note"?}, or a native ranking
    record {"prompt", "responses", "ranking"} (matched to the item with that prompt and responses)."""
    item: int | None = None
    """Mark this item id as gold (with --ranking)."""
    ranking: str | None = None
    """The item's gold ranking as JSON, best first, ties as inner lists: '["r2", ["r0", "r3"], "r1"]'."""
    note: str | None = None
    """A note kept with --item (why this ranking is right)."""
    remove: int | None = None
    """Unmark this item id (its rankings stay)."""
    list: bool = False
    """List the gold items with their rankings."""


def gold_main(cfg: GoldConfig, store: Any) -> int:
    from rlhfkit.collect.annotate.store import read_gold

    actions = [cfg.file is not None, cfg.item is not None, cfg.remove is not None, cfg.list]
    if sum(actions) != 1:
        raise ConfigError("give one of: a gold FILE, --item N --ranking JSON, --remove N, --list")
    if cfg.file is not None:
        records = read_gold(cfg.file)
        store.set_gold_records(records)
        print(
            f"marked {len(records)} items as gold from {cfg.file}; {len(store.gold())} in {cfg.db}"
        )
    elif cfg.item is not None:
        if cfg.ranking is None:
            raise ConfigError("--item needs --ranking (JSON, best first, ties as inner lists)")
        try:
            ranking = json.loads(cfg.ranking)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--ranking is not valid JSON: {e.msg} (column {e.colno})") from None
        canonical = store.set_gold(cfg.item, ranking, cfg.note)
        print(f"item {cfg.item} is gold: {json.dumps(canonical)}")
    elif cfg.remove is not None:
        if not store.remove_gold(cfg.remove):
            raise ConfigError(f"item {cfg.remove} is not a gold item")
        print(f"item {cfg.remove} is no longer gold")
    else:
        rows = store.gold_items()
        if not rows:
            print("no gold items")
        for g in rows:
            prompt = printable(" ".join(g["prompt"].split()))[:60]
            print(
                f"item {g['item_id']:>5}  {g['rankings']:>3} rankings  {json.dumps(g['ranking'])}  {prompt}"
            )
    return 0


def printable(text: str) -> str:
    """``text`` safe for a terminal (``cli.annotate.terminal_safe``)."""
    from rlhfkit.cli.annotate import terminal_safe

    return terminal_safe(text)


def print_quality(quality: dict[str, Any]) -> None:
    """The quality part of ``annotate stats``."""
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    print(
        f"\nquality: {quality['gold_items']} gold items ({quality['gold_rankings']} rankings of "
        f"them); Kendall's W {fmt(quality['kendall_w_mean'])} (mean over "
        f"{quality['kendall_w_items']} items with 2+ annotators)"
    )
    print(
        f"{'annotator':<24} {'reliability':>11} {'(n)':>5} {'tau others':>10} {'(n)':>5} "
        f"{'gold tau':>8} {'(n)':>5} {'exact':>5}"
    )
    for name, q in quality["annotators"].items():
        print(
            f"{printable(name):<24} {fmt(q['reliability']):>11} {q['compared']:>5} "
            f"{fmt(q['tau_vs_others']):>10} {q['items_with_others']:>5} {fmt(q['gold_tau']):>8} "
            f"{q['gold_items']:>5} {q['gold_exact']:>5}"
        )
    print(
        "reliability: mean Kendall's tau-b against gold, or against the other annotators' consensus"
    )
    shown = [d for d in quality["most_disagreed"] if d["disagreement"]]
    if shown:
        print("\nmost disagreement (1 - Kendall's W):")
        for d in shown:
            prompt = printable(" ".join(d["prompt"].split()))[:60]
            print(
                f"  item {d['item_id']:>5}  {d['disagreement']:.2f}  ({d['annotators']} annotators)  {prompt}"
            )
