"""The demo report's "Mitigations" section (``rlhfkit demo --mitigations``): the reward-model
ensemble against gold, PPO at the low β on its objectives, and best-of-n curves."""

from __future__ import annotations

from typing import Any

from rlhfkit.report import table


def _ensemble_table(ens: dict[str, Any]) -> str:
    vs = ens["vs_gold"]
    rows = []
    for name, what in (("heldout", "unranked groups, training topics"), ("heldout_topics", "held-out topics")):  # fmt: skip
        if name not in vs:
            continue
        v = vs[name]
        rows.append(
            [what, ", ".join(f"{a:.3f}" for a in v["members"]), v["mean"], v["noise_ceiling"]]
        )
    return table(
        ["pairs scored against gold", "each member", "the members' mean", "noise ceiling"],
        rows,
        [False, False, True, True],
    )


def _best_of_n_figure(bon: dict[str, Any]) -> str:
    """Best-of-n: proxy and gold gained over one sample against ``√KL_bon``, a line per chooser,
    with Gao et al.'s best-of-n fit through the gold points."""
    from rlhfkit.hacking.overoptimization import GaoFit
    from rlhfkit.report import _pyplot
    from rlhfkit.report.figures import proxy_gold_panels

    plt = _pyplot()
    fig, (ax_p, ax_g) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, curve) in enumerate(bon["choosers"].items()):
        color = colors[i % len(colors)]
        pts = curve["points"]
        d = [p["kl"] ** 0.5 for p in pts]
        ax_p.plot(d, [p["proxy_gain"] for p in pts], "o-", color=color, markersize=4, label=name)
        ax_g.plot(d, [p["gold_gain"] for p in pts], "o", color=color, markersize=4, label=name)
        fit = curve.get("gao_fit")
        if fit:
            g = GaoFit(
                **{**fit, "alpha_ci": tuple(fit["alpha_ci"]), "beta_ci": tuple(fit["beta_ci"])}
            )
            xs = [max(d) * k / 100 for k in range(101)]
            ax_g.plot(xs, g.predict(xs), "-", color=color, linewidth=1.4,
                      label=f"{name}: fit α={g.alpha:.2f}, β={g.beta:.2f}")  # fmt: skip
        for p, x in zip(pts, d, strict=True):
            if name == "single":
                ax_p.annotate(f"n={p['n']}", (x, p["proxy_gain"]), textcoords="offset points",
                              xytext=(2, 4), fontsize=7, color="#666")  # fmt: skip
    return proxy_gold_panels(
        fig, (ax_p, ax_g), "d = √KL_bon = √(log n − (n − 1)/n)",
        ("proxy (the single reward model) gained over n = 1", "gold (true) gained over n = 1"),
        ("Best-of-n: the reward model's score of the chosen answer",
         "Best-of-n: gold, with the fit R(d) = d(α − β·d)"),
        title_size=10,
    )  # fmt: skip


def _best_of_n_table(bon: dict[str, Any]) -> str:
    rows = []
    for name, curve in bon["choosers"].items():
        last, fit = curve["points"][-1], curve.get("gao_fit") or {}
        peak = fit.get("peak_kl")
        rows.append([
            name, last["n"], last["kl"], last["proxy_gain"], last["gold_gain"],
            fit.get("alpha", "—"), fit.get("beta", "—"),
            "—" if peak is None else f"KL {peak:.2f}",
        ])  # fmt: skip
    return table(
        ["chosen by", "largest n", "KL_bon", "proxy gained", "gold gained", "fit α", "fit β",
         "fitted gold peak"],
        rows,
        [False, True, True, True, True, True, True, False],
    )  # fmt: skip


def mitigations_section(summary: dict[str, Any]) -> str:
    from rlhfkit.demo.report import _run_label, _verdict_cell  # the result table's own cells

    mit = summary["mitigations"]
    ens, bon = mit["ensemble"], mit["best_of_n"]
    ensemble_runs = [r for r in summary["runs"] if r.get("ensemble_objective")]
    low = next((r for r in summary["runs"] if r["name"] == "low-beta"), None)
    rows = [
        [_run_label(r), r["beta"], r["kl"], r["proxy_reward_tuned"] - r["proxy_reward_base"],
         r["gold_reward_tuned"] - r["gold_reward_base"],
         f"{r.get('valid_rate_tuned', float('nan')):.0%}", _verdict_cell(r)]
        for r in ([low] if low else []) + ensemble_runs
    ]  # fmt: skip
    ppo = table(
        ["run", "β", "final KL", "proxy gained (single reward model)", "gold gained",
         "valid world text", "verdict without gold"],
        rows,
        [False, True, True, True, True, False, False],
    )  # fmt: skip
    return (
        f"<h3>A reward-model ensemble of {len(ens['vs_gold']['heldout']['members'])} members</h3>"
        "<p>Members trained independently on the same rankings (their seeds differ: head "
        "initialization and data order), scored against gold on the same fresh groups as the "
        "single reward model. "
        f"On the held-out rankings the members split {ens.get('disagreement_pairs') or 0.0:.1%} "
        "of the pairs.</p>" + _ensemble_table(ens)
        + "<h3>PPO at the low β, on the ensemble</h3>"
        "<p>The same low-β run as above, with the reward replaced by the ensemble's worst member "
        "(<code>worst</code>) or its mean minus λ times the members' variance (<code>uwo</code>, "
        "Coste et al. 2023). Proxy gained is measured with the single reward model on both, so the "
        "rows compare.</p>" + ppo
        + f"<h3>Best-of-n from the base policy ({bon['prompts']} held-out prompts, "
        f"{bon['samples_per_prompt']} samples each)</h3>"
        "<p>For each n, the held-out samples are cut into disjoint groups of n and the answer the "
        "chooser scores highest is kept. The single reward model's own score can only rise with "
        "n; gold shows whether what it picks is better. An ensemble objective that rises less in "
        "proxy and as much or more in gold is paying less for the reward model's errors.</p>"
        + f'<div class="wide"><img src="{_best_of_n_figure(bon)}" alt="best-of-n: proxy and gold against √KL"></div>'
        + _best_of_n_table(bon)
    )  # fmt: skip
