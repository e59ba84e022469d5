"""Render what a run did as one self-contained HTML file (plots embedded, works offline).

``render_run_report(run_dir)`` reads a PPO run directory (``metrics.jsonl``, ``samples.jsonl``,
optional ``config.json``) and writes ``run_dir/report.html``. The demo builds a richer page from
the same pieces (:func:`metric_figure`, :func:`samples_table`, :func:`page`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlhfkit.report.figures import _pyplot, figure_uri, gold_vs_sqrt_kl_figure, metric_figure
from rlhfkit.report.html import (
    STYLE,
    esc,
    fmt,
    images_grid,
    kv_table,
    page,
    samples_table,
    table,
)
from rlhfkit.report.runs import Run, load_run
from rlhfkit.runtime.io import atomic_open

__all__ = [
    "PPO_PANELS",
    "STYLE",
    "Run",
    "_pyplot",
    "esc",
    "figure_uri",
    "fmt",
    "gold_vs_sqrt_kl_figure",
    "images_grid",
    "kv_table",
    "load_run",
    "metric_figure",
    "page",
    "ppo_sections",
    "render_run_report",
    "samples_table",
    "table",
]  # fmt: skip

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


def ppo_sections(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """The training-curve, over-optimization, hacking and samples sections for PPO runs."""
    # The main figure first: over-optimization against gold, when a gold reward was logged.
    sections = []
    gold = gold_vs_sqrt_kl_figure(runs)
    if gold:
        sections.append(
            ("Over-optimization: reward against √KL (Gao et al. 2022)",
             f'<div class="wide"><img src="{gold}" alt="proxy and gold reward against √KL"></div>')
        )  # fmt: skip
    sections.append(
        ("Training curves", images_grid([metric_figure(runs, k, y, t) for k, y, t in PPO_PANELS]))
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
