"""The report's HTML pieces: escaped text, tables, a grid of figures, the page."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

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
.muted{color:#777} .flag{color:#b00020;font-weight:600} .ok{color:#1b7f3a;font-weight:600} .warn{color:#a65f00;font-weight:600}
.kv td:first-child{font-weight:600;width:30%}
"""


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
