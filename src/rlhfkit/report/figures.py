"""The report's figures (matplotlib, embedded as PNG data URIs so the page works offline)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

from rlhfkit.report.runs import Run


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


def run_gao_points(run: Run) -> tuple[list[float], list[float], list[float]]:
    """Per update: ``d = √KL`` (the batch's mean KL per response, ≥ 0), and the proxy and gold
    rewards gained since the first update (whose samples come from the initial policy)."""
    kl = dict(zip(*run.series("objective/kl"), strict=True))
    proxy = dict(zip(*run.series("objective/scores"), strict=True))
    gold = dict(zip(*run.series("objective/gold_scores"), strict=True))
    steps = [s for s in sorted(gold) if s in kl and s in proxy]
    if not steps:
        return [], [], []
    p0, g0 = proxy[steps[0]], gold[steps[0]]
    return (
        [math.sqrt(max(kl[s], 0.0)) for s in steps],
        [proxy[s] - p0 for s in steps],
        [gold[s] - g0 for s in steps],
    )


def gold_vs_sqrt_kl_figure(runs: Sequence[Run], fits: dict[str, Any] | None = None) -> str | None:
    """The over-optimization figure (Gao et al. 2022): proxy (left) and gold (right) reward gained
    since the first update against ``d = √KL(π ‖ π_ref)``, a point per update, each run's fitted
    ``R(d) = d(α − β·log d)`` drawn through its gold points and its predicted peak marked.
    ``fits`` (name -> :class:`~rlhfkit.hacking.overoptimization.GaoFit`) is computed here when
    not given."""
    from rlhfkit.hacking.overoptimization import fit_gao

    if not any(r.has("objective/gold_scores") for r in runs):
        return None
    points = [run_gao_points(run) for run in runs]
    if not any(d for d, _, _ in points):  # no update logged KL, proxy and gold together
        return None
    plt = _pyplot()
    fig, (ax_p, ax_g) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = 0.0
    for i, (run, (d, proxy, gold)) in enumerate(zip(runs, points, strict=True)):
        if not d:
            continue
        color = colors[i % len(colors)]
        top = max(top, max(d))
        ax_p.plot(d, proxy, "o", color=color, markersize=3.5, alpha=0.75, label=run.name)
        ax_g.plot(d, gold, "o", color=color, markersize=3.5, alpha=0.75, label=run.name)
        fit = (fits or {}).get(run.name) if fits is not None else fit_gao(d, gold, "rl")
        if fit is None:
            continue
        grid = [top * k / 200 for k in range(1, 201)]
        xs = [x for x in grid if x <= max(d) * 1.15]
        ax_g.plot(xs, fit.predict(xs), "-", color=color, linewidth=1.6,
                  label=f"{run.name}: fit α={fit.alpha:.2f}, β={fit.beta:.2f}")  # fmt: skip
        if fit.peak_d is not None and fit.peak_d <= max(d) * 1.5:
            ax_g.axvline(fit.peak_d, color=color, linestyle="--", linewidth=1.2)
            ax_g.annotate(f"peak KL {fit.peak_kl:.1f}", (fit.peak_d, fit.peak_gain or 0.0),
                          textcoords="offset points", xytext=(4, 6), fontsize=8, color=color)  # fmt: skip
    return proxy_gold_panels(
        fig, (ax_p, ax_g), "d = √KL(π ‖ π_ref)",
        ("proxy (reward model) reward gained", "gold (true) reward gained"),
        ("Proxy reward against √KL", "Gold reward against √KL, with the fitted R(d) = d(α − β log d)"),
    )  # fmt: skip


def proxy_gold_panels(fig, axes, xlabel: str, ylabels: Sequence[str], titles: Sequence[str],
                      title_size: int = 11) -> str:  # fmt: skip
    """Finish a proxy | gold pair of panels against ``d``: the zero line, labels, grid, legends,
    titles; returns the figure as a data URI."""
    for ax, ylabel, title in zip(axes, ylabels, titles, strict=True):
        ax.axhline(0.0, color="#999", linewidth=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=title_size)
    fig.tight_layout()
    return figure_uri(fig)
