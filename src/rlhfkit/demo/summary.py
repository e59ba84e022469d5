"""The demo's console summary."""

from __future__ import annotations

import math
from typing import Any


def format_summary(summary: dict[str, Any]) -> str:
    """The short console summary printed at the end of the demo."""
    lines = [
        f"reward model: pairwise accuracy vs gold on unranked answers {summary['rm_heldout_accuracy']:.3f} "
        f"(noise ceiling {summary['rm_noise_ceiling']:.3f}), on held-out topics "
        f"{summary.get('rm_heldout_topics_accuracy', float('nan')):.3f}",
    ]
    for r in summary["runs"]:
        flagged = ", ".join(r["flagged_tokens"][:4]) or "nothing"
        lines.append(
            f"{r['name']:>14} (β={r['beta']:g}): KL {r['kl']:.2f} (held-out {r['kl_heldout']:.2f}) "
            f"| proxy {r['proxy_reward_base']:+.2f} → "
            f"{r['proxy_reward_tuned']:+.2f} | gold {r['gold_reward_base']:+.2f} → {r['gold_reward_tuned']:+.2f}"
            f"{gain_note(r, 'gold')} | flagged: {flagged}"
        )
        verdict = r.get("verdict")
        if verdict:
            objective = r.get("ensemble_objective")
            with_ensemble = (r.get("verdict_with_ensemble") or {}).get("label")
            lines.append(
                f"{'':>14}  "
                + (f"reward: the ensemble's {objective} objective; " if objective else "")
                + f"verdict without gold: {verdict['label']}"
                + (f" ({with_ensemble} with the ensemble)" if with_ensemble not in (None, verdict["label"]) else "")
            )  # fmt: skip
        empty, empty_base = r.get("empty_rate_tuned") or 0.0, r.get("empty_rate_base") or 0.0
        if empty >= 0.5:
            # e.g. --quick on its barely fluent base policy: an empty answer (gold −2) beats most
            # of what that policy writes, and the reward model never saw one ranked
            lines.append(
                f"{'':>14}  {empty:.0%} of its held-out answers are empty (base policy: "
                f"{empty_base:.0%}): it learned to say nothing"
            )
    mitigations = summary.get("mitigations")
    if mitigations:
        vs = mitigations["ensemble"]["vs_gold"]["heldout"]
        lines.append(
            f"ensemble of {len(vs['members'])}: members' accuracy vs gold "
            + ", ".join(f"{a:.3f}" for a in vs["members"]) + f", their mean {vs['mean']:.3f}"
        )  # fmt: skip
        for name, curve in mitigations["best_of_n"]["choosers"].items():
            last = curve["points"][-1]
            lines.append(
                f"best-of-{last['n']} by {name:>6}: proxy {last['proxy_gain']:+.2f}, "
                f"gold {last['gold_gain']:+.2f} over one sample (KL {last['kl']:.2f})"
            )
    minutes = summary["wall_seconds"] / 60
    lines.append(
        f"wall time {summary['wall_seconds']:.0f} s ({minutes:.1f} min){machine_note(summary)}"
    )
    return "\n".join(lines)


def gain_note(run: dict[str, Any], what: str) -> str:
    """`` (gain +0.40 ± 0.25)``: a run's held-out gain in ``what`` (``gold``, ``proxy``) with its
    standard error (``{what}_gain_se``: which answers the two policies happened to sample moves
    the gain by about that much); empty for a summary without it."""
    se = run.get(f"{what}_gain_se")
    if se is None or not math.isfinite(se):
        return ""
    gain = run[f"{what}_reward_tuned"] - run[f"{what}_reward_base"]
    return f" (gain {gain:+.2f} ± {se:.2f})"


def machine_note(summary: dict[str, Any]) -> str:
    """Where it ran, as far as the figures depend on it: the cores, the CPU, and torch's CPU
    kernels (README's figures are an AMD EPYC's with AVX512's; other kernels, or another CPU
    with the same ones, round differently)."""
    machine = summary.get("machine")
    if not machine:
        return ""
    cores = machine["cores"]
    cpu = f" of {machine['cpu']}" if machine.get("cpu") else ""
    return f" on {cores} core{'s' if cores != 1 else ''}{cpu}, torch's {machine['cpu_kernels']} kernels"
