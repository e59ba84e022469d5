"""The report's figures (matplotlib, embedded as PNG data URIs so the page works offline)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

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
