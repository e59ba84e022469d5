"""Render what a run did as one self-contained HTML file (plots embedded, works offline).

``render_run_report(run_dir)`` reads a PPO run directory (``metrics.jsonl``, ``samples.jsonl``,
optional ``config.json``) and writes ``run_dir/report.html``. The demo builds a richer page from
the same pieces (:func:`metric_figure`, :func:`samples_table`, :func:`page`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import DataError
from rlhfkit.runtime.io import atomic_open, iter_jsonl

# (metric, axis label) groups plotted for every PPO run, in this order, when present.
PPO_PANELS: list[tuple[str, str, str]] = [
    ("objective/scores", "reward-model score (proxy)", "Proxy reward per update"),
    ("objective/gold_scores", "gold reward", "Gold reward per update (evaluation only)"),
    ("objective/kl", "KL(π ‖ π_ref) per response", "KL to the reference"),
    ("objective/rlhf_reward", "score − β·KL", "RLHF objective"),
    ("objective/kl_coef", "β", "KL coefficient"),
    ("objective/entropy", "nats per response", "Policy entropy (sum of −log π)"),
    ("response/length_mean", "tokens", "Response length"),
    ("policy/clipfrac", "share of tokens", "PPO clip fraction"),
    ("policy/approxkl", "approx. KL old→new", "Update size (approx KL)"),
    ("val/ratio", "mean ρ", "Probability ratio (healthy ≈ 1)"),
    ("val/explained_variance", "1 − Var(R−V)/Var(R)", "Critic explained variance"),
    ("hacking/top_ratio", "rate ratio tuned/base", "Strongest token shift (hacking monitor)"),
    ("hacking/length_ratio", "tuned / base length", "Length drift (hacking monitor)"),
]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.grid img,.wide img{width:100%;border:1px solid #eee;border-radius:4px}
table{border-collapse:collapse;width:100%;font-size:.92em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
.resp{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em}
.muted{color:#777} .flag{color:#b00020;font-weight:600} .ok{color:#1b7f3a;font-weight:600}
.kv td:first-child{font-weight:600;width:30%}
"""


@dataclass
class Run:
    """What the report needs from a run directory."""

    name: str
    path: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(x, y) of a metric over updates; x is the ``step`` field (or the line index)."""
        xs, ys = [], []
        for i, row in enumerate(self.metrics):
            v = row.get(key)
            if isinstance(v, int):
                v = float(v) if abs(v) < 2**1000 else math.nan  # a huge JSON int overflows float
            if isinstance(v, float) and math.isfinite(v):
                xs.append(float(row.get("step", i + 1)))
                ys.append(v)
        return xs, ys

    def has(self, key: str) -> bool:
        return any(key in row for row in self.metrics)


def _stepped_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a run's log, each with an integer ``step`` or none (a clear error for a
    line that is not an object or whose step is not an integer, ``null`` included)."""
    for lineno, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise DataError("expected a JSON object per line", path, lineno)
        step = row.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or abs(step) > 2**53:
            raise DataError(f"'step' must be an integer, got {str(step)[:40]!r}", path, lineno)
        yield row


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read ``metrics.jsonl`` (required), ``samples.jsonl`` and ``config.json`` (optional)."""
    path = Path(path)
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise DataError("not a run directory: metrics.jsonl is missing", path)
    run = Run(name=name or path.name, path=path)
    run.metrics.extend(_stepped_rows(metrics_path))
    samples_path = path / "samples.jsonl"
    if samples_path.is_file():
        run.samples.extend(_stepped_rows(samples_path))
    config_path = path / "config.json"
    if config_path.is_file():
        try:
            run.config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"invalid JSON: {e}", config_path) from None
    return run


# --- figures --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_uri(fig) -> str:
    """PNG data URI of a matplotlib figure (closes it)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def metric_figure(
    runs: Sequence[Run], key: str, ylabel: str, title: str, xlabel: str = "PPO update"
) -> str | None:
    """One line per run for ``key``; None when no run logged it."""
    if not any(r.has(key) for r in runs):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for run in runs:
        xs, ys = run.series(key)
        if xs:
            ax.plot(xs, ys, label=run.name, linewidth=1.6)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return figure_uri(fig)


def gold_vs_sqrt_kl_figure(runs: Sequence[Run]) -> str | None:
    """Gao et al. 2022's over-optimization plot: gold reward (left axis) and proxy reward (right
    axis, dotted: a different scale) against d = √KL(π ‖ π_ref) per update."""
    if not any(r.has("objective/gold_scores") for r in runs):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax_proxy = ax.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        kl = dict(zip(*run.series("objective/kl"), strict=True))
        color = colors[i % len(colors)]
        for axis, key, style, label in (
            (ax, "objective/gold_scores", "-", "gold"),
            (ax_proxy, "objective/scores", ":", "proxy"),
        ):
            xs, ys = run.series(key)
            pts = [(math.sqrt(max(kl[x], 0.0)), y) for x, y in zip(xs, ys, strict=True) if x in kl]
            if pts:
                axis.plot(
                    *zip(*pts, strict=True),
                    style,
                    color=color,
                    label=f"{run.name}: {label}",
                    linewidth=1.6,
                )
    ax.set_xlabel("√KL(π ‖ π_ref)  (distance from the initial policy)")
    ax.set_ylabel("gold reward (solid)")
    ax_proxy.set_ylabel("proxy reward (dotted)")
    ax.set_title("Reward against √KL (Gao et al. 2022)", fontsize=11)
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    proxy_lines = ax_proxy.get_legend_handles_labels()
    ax.legend(lines[0] + proxy_lines[0], lines[1] + proxy_lines[1], fontsize=8)
    return figure_uri(fig)


# --- HTML pieces ----------------------------------------------------------------------------------


def esc(x: Any) -> str:
    """Escape anything for HTML text (model output is untrusted)."""
    return html.escape(str(x), quote=True)


def fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        if not math.isfinite(x):
            return esc(x)
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3e}"
    return esc(x)


def images_grid(uris: Sequence[str | None]) -> str:
    imgs = "".join(f'<img alt="plot" src="{u}">' for u in uris if u)
    return f'<div class="grid">{imgs}</div>' if imgs else '<p class="muted">No metrics logged.</p>'


def kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{esc(k)}</td><td>{fmt(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None
) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{fmt(c)}</td>' if n else f"<td>{fmt(c)}</td>"
            for c, n in zip(r, numeric, strict=True)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def samples_table(samples: Sequence[dict[str, Any]], limit: int = 8) -> str:
    """Prompt / response / score / KL rows; responses shown as escaped, pre-wrapped text."""
    rows = []
    for s in list(samples)[:limit]:
        rows.append(
            "<tr>"
            f"<td>{esc(s.get('step', ''))}</td>"
            f'<td class="resp">{esc(s.get("prompt", ""))}</td>'
            f'<td class="resp">{esc(s.get("response", ""))}</td>'
            f'<td class="num">{fmt(s.get("score", ""))}</td>'
            f'<td class="num">{fmt(s.get("kl", ""))}</td>'
            "</tr>"
        )
    if not rows:
        return '<p class="muted">No samples logged.</p>'
    return (
        "<table><tr><th>update</th><th>prompt</th><th>response</th><th>score</th><th>KL</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def page(title: str, sections: Sequence[tuple[str, str]], subtitle: str = "") -> str:
    body = "".join(f"<h2>{esc(h)}</h2>{content}" for h, content in sections)
    sub = f'<p class="muted">{esc(subtitle)}</p>' if subtitle else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>{sub}{body}</body></html>"
    )


def ppo_sections(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """The training-curve, over-optimization, hacking and samples sections for PPO runs."""
    sections = [
        ("Training curves", images_grid([metric_figure(runs, k, y, t) for k, y, t in PPO_PANELS]))
    ]
    gold = gold_vs_sqrt_kl_figure(runs)
    if gold:
        sections.append(
            (
                "Over-optimization: reward against √KL",
                f'<div class="wide">{images_grid([gold])}</div>',
            )
        )
    for run in runs:
        flagged = [
            r
            for r in run.metrics
            if r.get("hacking/flagged")
            or r.get("hacking/drift_flagged")
            or r.get("hacking/suspected")
        ]
        if run.has("hacking/flagged"):
            last = next((r for r in reversed(run.metrics) if "hacking/flagged" in r), {})
            status = (
                f'<p class="flag">{esc(run.name)}: the hacking monitor flagged something at {len(flagged)} check(s).</p>'
                if flagged
                else f'<p class="ok">{esc(run.name)}: the hacking monitor flagged nothing.</p>'
            )
            keys = sorted(k for k in last if k.startswith("hacking/"))
            sections.append(
                (f"Hacking monitor — {run.name}", status + kv_table([(k, last[k]) for k in keys]))
            )
    for run in runs:
        if not run.samples:
            continue
        steps = sorted({s.get("step", 0) for s in run.samples})
        first = [s for s in run.samples if s.get("step", 0) == steps[0]]
        last = [s for s in run.samples if s.get("step", 0) == steps[-1]]
        content = f"<h3>First logged update ({esc(steps[0])})</h3>{samples_table(first)}"
        if len(steps) > 1:
            content += f"<h3>Last logged update ({esc(steps[-1])})</h3>{samples_table(last)}"
        sections.append((f"Samples — {run.name}", content))
    return sections


def render_run_report(
    run_dir: str | Path, out: str | Path | None = None, title: str | None = None
) -> Path:
    """Write ``report.html`` for one PPO run directory; returns its path."""
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.path / "report.html"
    final = run.metrics[-1] if run.metrics else {}
    summary = [
        (k, final[k])
        for k in (
            "step",
            "episode",
            "objective/scores",
            "objective/gold_scores",
            "objective/kl",
            "objective/kl_coef",
            "response/length_mean",
        )
        if k in final
    ]
    config_rows = [
        (k, v)
        for k, v in sorted(run.config.items())
        if isinstance(v, (str, int, float, bool)) or v is None
    ]
    sections = [
        (
            "Final update",
            kv_table(summary) if summary else '<p class="muted">No updates logged.</p>',
        )
    ]
    sections += ppo_sections([run])
    if config_rows:
        sections.append(("Configuration", kv_table(config_rows)))
    html_text = page(
        title or f"rlhfkit run: {run.path.name}", sections, subtitle=str(run.path.resolve())
    )
    with atomic_open(out) as f:
        f.write(html_text)
    return out
