"""``rlhfkit annotate SUBCOMMAND``: the ranking web app and its database.

rlhfkit annotate import --db ann.db candidates.jsonl
rlhfkit annotate add-annotator alice --db ann.db [--admin]
rlhfkit annotate serve --db ann.db [--host 127.0.0.1] [--port 8000] [--overlap 3] [--guidelines F.md]
rlhfkit annotate export --db ann.db --format rankings|pairs [--min-annotators N] [--consensus] --out F
rlhfkit annotate stats --db ann.db [--json]
rlhfkit annotate gold --db ann.db gold.jsonl | --item N --ranking JSON | --remove N | --list
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from rlhfkit.cli._common import parse_config
from rlhfkit.cli.annotate_quality import GoldConfig, gold_main, print_quality
from rlhfkit.errors import DataError, RlhfkitError


@dataclasses.dataclass
class ImportConfig:
    """Import candidate responses ({"prompt", "responses": [{"id", "text"}]} per line) as items."""

    candidates: Annotated[Path, tyro.conf.Positional]
    """JSONL file of candidates, e.g. the output of `rlhfkit generate`."""
    db: Path
    """The annotation database (SQLite file; created if missing)."""


@dataclasses.dataclass
class AddAnnotatorConfig:
    """Create an annotator and print their secret token and login link (shown once)."""

    name: Annotated[str, tyro.conf.Positional]
    """The annotator's name (unique, shown in stats and exports)."""
    db: Path
    """The annotation database."""
    admin: bool = False
    """Also allow the admin page: progress, agreement and export."""
    rotate: bool = False
    """Give an existing annotator a new token; the old token and its sessions stop working."""
    url: str = "http://127.0.0.1:8000"
    """Base URL the server will be reached at, used to print the login link."""


@dataclasses.dataclass
class ServeConfig:
    """Serve the ranking app (FastAPI on uvicorn)."""

    db: Path
    """The annotation database."""
    host: str = "127.0.0.1"
    """Address to listen on. Anything but loopback exposes the app to the network: put HTTPS in front."""
    port: int = 8000
    """Port to listen on (0: any free port)."""
    overlap: int = 1
    """How many different annotators rank each item."""
    assignment_timeout: float = 7200.0
    """Seconds after which an opened but unfinished item goes back to the pool."""
    max_body_bytes: int = 65536
    """Largest request body accepted (bigger ones get 413)."""
    secure_cookies: bool = False
    """Mark the session cookie Secure (set this when serving behind HTTPS)."""
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """SQLite durability: FULL, a 201 survives power loss; NORMAL, survives a crash of the server
    only, with much faster commits on slow disks."""
    log_level: str = "info"
    """uvicorn log level (warning quiets the access log)."""
    guidelines: Path | None = None
    """A Markdown file of annotation guidelines, shown to annotators in a collapsible panel
    (re-read when it changes)."""


@dataclasses.dataclass
class ExportConfig:
    """Export rankings for `rlhfkit train-rm`: native rankings or TRL prompt/chosen/rejected pairs."""

    db: Path
    """The annotation database."""
    out: Path
    """Output file, written atomically: JSONL (pairs to *.parquet are written as Parquet)."""
    format: Literal["rankings", "pairs"] = "rankings"
    """rankings: one native record per ranking; pairs: every strictly ordered pair (ties dropped)."""
    min_annotators: int = 1
    """Only items ranked by at least this many annotators."""
    consensus: bool = False
    """One consensus ranking per item instead of one record per annotator."""
    consensus_method: Literal["ranked-pairs", "borda"] = "ranked-pairs"
    """How to merge rankings with --consensus: ranked pairs (Tideman) or Borda count."""
    min_reliability: float | None = None
    """Leave out annotators whose reliability (mean Kendall tau-b against gold or the others'
    consensus, -1..1; see `annotate stats`) is below this, or unknown."""
    weight_by_reliability: bool = False
    """Give each ranking "weight" = max(0, its annotator's reliability), which train-rm uses in
    the loss; annotators of unknown reliability are left out."""


@dataclasses.dataclass
class StatsConfig:
    """Print progress per annotator and agreement between annotators."""

    db: Path
    """The annotation database."""
    overlap: int | None = None
    """Annotators wanted per item (default: the value the server last ran with)."""
    json: bool = False
    """Print the full statistics as JSON."""


SUBCOMMANDS = {
    "import": (ImportConfig, "import candidate responses as items to rank"),
    "add-annotator": (AddAnnotatorConfig, "create an annotator; prints their token and login link"),
    "serve": (ServeConfig, "serve the ranking web app"),
    "export": (ExportConfig, "export rankings or pairs for train-rm"),
    "stats": (StatsConfig, "progress and agreement"),
    "gold": (GoldConfig, "mark items with a known ranking (gold) to measure annotators against"),
}


def _usage() -> str:
    lines = ["usage: rlhfkit annotate SUBCOMMAND [options]", "", "subcommands:"]
    lines += [f"  {name.ljust(14)} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def _existing_db(path: Path) -> Path:
    if not path.is_file():
        raise DataError("database not found (create it with `rlhfkit annotate import`)", path)
    return path


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"rlhfkit annotate: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    cls, help_ = SUBCOMMANDS[name]
    cfg = parse_config(
        cls, rest, prog=f"rlhfkit annotate {name}", description=help_, yaml_config=False
    )
    return {
        "import": _import,
        "add-annotator": _add_annotator,
        "serve": _serve,
        "export": _export,
        "stats": _stats,
        "gold": _gold,
    }[name](cfg)


def _import(cfg: ImportConfig) -> int:
    from rlhfkit.collect.annotate.store import Store, read_candidates

    # Validate the whole file first: a bad file must not leave a new, empty database behind.
    items = read_candidates(cfg.candidates)
    store = Store(cfg.db)
    store.init()
    added, present = store.add_items(items)
    total = store.counts()["items"]
    print(
        f"imported {added} items from {cfg.candidates} ({present} already present); {total} items in {cfg.db}"
    )
    return 0


def _add_annotator(cfg: AddAnnotatorConfig) -> int:
    from rlhfkit.collect.annotate.store import Store

    store = Store(cfg.db)
    store.init()
    token = store.rotate_token(cfg.name) if cfg.rotate else store.add_annotator(cfg.name, cfg.admin)
    role = "admin" if cfg.admin else "annotator"
    print(
        f"{'new token for' if cfg.rotate else 'added ' + role} {cfg.name!r}. Keep this secret: it is shown once."
    )
    print(f"token: {token}")
    print(f"{cfg.url.rstrip('/')}/login#token={token}")
    return 0


def _serve(cfg: ServeConfig) -> int:
    import uvicorn

    from rlhfkit.collect.annotate.app import create_app

    _existing_db(cfg.db)
    if not _is_loopback(cfg.host):
        print(
            f"warning: listening on {cfg.host}: reachable from the network. Serve it behind HTTPS "
            "and pass --secure-cookies; tokens and cookies travel in clear text otherwise.",
            file=sys.stderr,
        )
    app = create_app(
        cfg.db,
        overlap=cfg.overlap,
        assignment_timeout_s=cfg.assignment_timeout,
        max_body_bytes=cfg.max_body_bytes,
        secure_cookies=cfg.secure_cookies,
        synchronous=cfg.synchronous,
        guidelines=cfg.guidelines,
    )
    # One process: SQLite serializes writers anyway, and the store's per-call connections make the
    # thread pool safe. The app checkpoints the WAL when it shuts down (its lifespan), so the
    # database file stands alone after Ctrl-C or SIGTERM too.
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, server_header=False)
    writes = app.state.store._writes
    if writes.commits:
        print(
            f"annotate serve: {writes.writes} write transactions in {writes.commits} commits "
            f"({writes.writes / writes.commits:.2f} per commit)",
            file=sys.stderr,
        )
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _export(cfg: ExportConfig) -> int:
    from rlhfkit.collect.annotate.export import write_export
    from rlhfkit.collect.annotate.store import Store

    store = Store(_existing_db(cfg.db))
    store.init()  # adds tables newer than the file (gold) before reading them
    records = _export_records(store, cfg)
    if not records and not records.fully_tied:
        raise RlhfkitError(f"nothing to export: no item has {cfg.min_annotators} or more rankings")
    n = write_export(cfg.out, records, cfg.format)
    kind = "pairs" if cfg.format == "pairs" else "rankings"
    how = f" ({cfg.consensus_method} consensus)" if cfg.consensus else ""
    tied = (
        f"; left out {records.fully_tied} fully tied ranking{'s' if records.fully_tied > 1 else ''}"
        " (every response tied: no ordered pair)"
        if records.fully_tied
        else ""
    )
    print(f"wrote {n} {kind}{how} to {cfg.out}{tied}")
    return 0


def _stats(cfg: StatsConfig) -> int:
    from rlhfkit.collect.annotate.agreement import agreement_report
    from rlhfkit.collect.annotate.quality import store_quality
    from rlhfkit.collect.annotate.store import Store

    store = Store(_existing_db(cfg.db))
    store.init()  # adds tables newer than the file (gold) before reading them
    overlap = cfg.overlap if cfg.overlap is not None else int(store.get_meta("overlap", "1") or 1)
    data = {**store.overview(overlap), "agreement": agreement_report(store.rankings_by_item(2))}
    data["quality"] = store_quality(store)
    if cfg.json:
        print(terminal_safe(json.dumps(data, indent=2, ensure_ascii=False)))
        return 0
    ag = data["agreement"]
    print(
        f"items: {data['items']}   rankings: {data['rankings']} / {data['rankings_needed']} "
        f"(overlap {overlap})   items complete: {data['items_complete']}"
    )
    print()
    print(f"{'annotator':<24} {'done':>6} {'skipped':>8} {'open':>5} {'agreement':>10}")
    for a in data["annotators"]:
        agr = ag["pairwise_agreement_by_annotator"].get(a["name"])
        name = terminal_safe(a["name"]) + (" (admin)" if a["is_admin"] else "")
        print(
            f"{name:<24} {a['done']:>6} {a['skipped']:>8} {a['open']:>5} "
            f"{'-' if agr is None else f'{agr:.3f}':>10}"
        )
    print()
    alpha = ag["krippendorff_alpha_ordinal"]
    print(
        f"Krippendorff's alpha (ordinal): {'-' if alpha is None else f'{alpha:.3f}'}  {ag['alpha_reading']}"
    )
    pa = ag["pairwise_agreement"]
    print(
        f"pairwise agreement: {'-' if pa is None else f'{pa:.3f}'} over {ag['items_with_overlap']} items"
    )
    if ag["most_disagreed"]:
        print("\nmost disagreed items:")
        for d in ag["most_disagreed"]:
            prompt = terminal_safe(" ".join(d["prompt"].split()))
            print(f"  item {d['item_id']:>5}  agreement {d['agreement']:.2f}  {prompt[:70]}")
    if data["flags"]:
        print("\nflags:")
        for f in data["flags"]:
            print(f"  item {f['item_id']:>5}  {f['reason']:<8} x{f['count']}")
    print_quality(data["quality"])
    return 0


def terminal_safe(text: str) -> str:
    """``text`` with every non-printable character but the newline written as a JSON-style escape
    (``\\u001b``): names and prompts come from other people, and an ESC or a U+202E printed raw
    would move the cursor, recolour or reorder what the terminal shows. Also valid inside JSON."""
    return "".join(
        c if c.isprintable() or c == "\n" else json.dumps(c, ensure_ascii=True)[1:-1] for c in text
    )


def _gold(cfg: GoldConfig) -> int:
    from rlhfkit.collect.annotate.store import Store

    store = Store(_existing_db(cfg.db))
    store.init()
    return gold_main(cfg, store)


def _export_records(store: Any, cfg: ExportConfig) -> Any:
    """The records to export, with reliability applied when asked (says on stderr what it left out)."""
    from rlhfkit.collect.annotate.export import export_records, export_reliable

    consensus = cfg.consensus_method if cfg.consensus else None
    if cfg.min_reliability is None and not cfg.weight_by_reliability:
        return export_records(store, cfg.min_annotators, consensus)
    result = export_reliable(
        store, cfg.min_annotators, consensus, cfg.min_reliability, cfg.weight_by_reliability
    )
    for name, n in sorted(result.dropped.items()):
        rel = result.reliability.get(name)
        why = (
            "unknown reliability (no gold item and no item shared with others)"
            if rel is None
            else f"reliability {rel:.3f}"
        )
        print(f"left out {n} rankings of {terminal_safe(name)}: {why}", file=sys.stderr)
    return result.records
