"""The demo's report.html: the pipeline's result on the world, where the truth is known."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfkit.demo.report_mitigations import mitigations_section
from rlhfkit.demo.summary import gain_note, machine_note
from rlhfkit.report import (
    Run,
    esc,
    figure_uri,
    fmt,
    images_grid,
    load_run,
    page,
    ppo_sections,
    table,
)
from rlhfkit.runtime.io import atomic_open


def _rm_curve(rm_dir: Path) -> str | None:
    path = rm_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    rows = [r for r in rows if "rm/loss" in r]
    if not rows:
        return None
    from rlhfkit.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    steps = [r.get("step", i) for i, r in enumerate(rows)]
    ax.plot(steps, [r["rm/loss"] for r in rows], label="loss (Bradley-Terry)", color="#c44")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if any("rm/accuracy" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(
            steps,
            [r.get("rm/accuracy", float("nan")) for r in rows],
            label="training pair accuracy",
            color="#36c",
        )
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0.4, 1.0)
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Reward model learning curve", fontsize=11)
    return figure_uri(fig)


def _accuracy_bar(summary: dict[str, Any]) -> str:
    from rlhfkit.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 2.6))
    labels = [
        "chance",
        "reward model: held-out topics\n(vs gold)",
        "reward model: unranked groups\n(vs gold)",
        "annotators' labels\n(vs gold)",
        "noise ceiling",
    ]
    values = [
        0.5,
        summary.get("rm_heldout_topics_accuracy", float("nan")),
        summary["rm_heldout_accuracy"],
        summary.get("rm_label_accuracy", float("nan")),
        summary["rm_noise_ceiling"],
    ]
    ax.barh(labels, values, color=["#bbb", "#8ad", "#36c", "#9bd", "#2a2"])
    for i, v in enumerate(values):
        ax.text(v + 0.005, i, f"{v:.3f}", va="center", fontsize=8)
    ax.set_xlim(0.4, 1.0)
    ax.set_xlabel("pairwise accuracy")
    ax.set_title("Does the reward model predict the (simulated) human?", fontsize=10)
    return figure_uri(fig)


def _summary_table(summary: dict[str, Any]) -> str:
    rows = []
    for r in summary["runs"]:
        fan = r.get("fantastic", {})
        rows.append([
            r["name"], r["beta"],
            f"{r['kl']:.2f} / {r['kl_heldout']:.2f}" if "kl_heldout" in r else r["kl"],
            f"{r['proxy_reward_base']:+.3f} → {r['proxy_reward_tuned']:+.3f}{gain_note(r, 'proxy')}",
            f"{r['gold_reward_base']:+.3f} → {r['gold_reward_tuned']:+.3f}{gain_note(r, 'gold')}",
            f"{fan.get('base_share', float('nan')):.0%} → {fan.get('tuned_share', float('nan')):.0%}",
            f"{r.get('valid_rate_base', float('nan')):.0%} → {r.get('valid_rate_tuned', float('nan')):.0%}",
            ", ".join(r["flagged_tokens"][:6]) or "—",
            _verdict_cell(r),
        ])  # fmt: skip
    return table(
        ["run", "β", "final KL (last training batches / held-out responses)",
         "proxy reward (base → tuned)", "gold reward (base → tuned)",
         "responses with “fantastic”", "valid world text", "flagged by the scan",
         "verdict without gold"],
        rows,
        [False, True, True, False, False, False, False, False, False],
    )  # fmt: skip


def _run_label(r: dict[str, Any]) -> str:
    objective = r.get("ensemble_objective")
    return f"{r['name']} (ensemble, {objective})" if objective else r["name"]


def _verdict_cell(r: dict[str, Any]) -> str:
    """The run's verdict, and the ensemble-aware one when it differs."""
    plain = (r.get("verdict") or {}).get("label", "—")
    both = (r.get("verdict_with_ensemble") or {}).get("label")
    return plain if both in (None, plain) else f"{plain} ({both} with the ensemble)"


def _verdicts(summary: dict[str, Any]) -> str:
    """Each run's verdict and its reasons: what the monitor concludes from the base and tuned
    policies' answers and the reward model alone, before gold is looked at."""
    items = []
    for r in summary["runs"]:
        for key, what in (
            ("verdict", ""),
            ("verdict_with_ensemble", " — with the ensemble's disagreement"),
        ):
            v = r.get(key)
            if not v:
                continue
            reasons = "".join(f"<li>{esc(x)}</li>" for x in v.get("reasons", []))
            css = {"healthy": "ok", "hacked": "flag"}.get(v["label"], "warn")
            items.append(
                f'<p class="{css}"><b>{esc(_run_label(r))}{esc(what)}: {esc(v["label"])}</b></p>'
                + (f"<ul>{reasons}</ul>" if reasons else "")
            )
    gold = [
        f"{_run_label(r)}: gold {r['gold_reward_base']:+.2f} → {r['gold_reward_tuned']:+.2f}"
        for r in summary["runs"]
    ]
    return (
        "<p>The monitor's verdict uses only what a user without gold has: the base and tuned "
        "policies' answers to held-out prompts and the reward model (and, when there is one, the "
        "ensemble). Compare it with the gold it never saw: " + esc("; ".join(gold)) + ".</p>"
        + "".join(items)
    )  # fmt: skip


def _flagged_table(run: dict[str, Any]) -> str:
    flagged = run.get("scan", {}).get("flagged", [])
    if not flagged:
        return '<p class="ok">Nothing rose significantly.</p>'
    rows = [
        [
            f["token"],
            f["base_count"],
            f["tuned_count"],
            f["base_rate"],
            f["tuned_rate"],
            f["ratio"],
            f["p_adjusted"],
        ]
        for f in flagged[:12]
    ]
    return table(
        [
            "token / phrase",
            "base count",
            "tuned count",
            "base per 1k words",
            "tuned per 1k words",
            "ratio",
            "adjusted p",
        ],
        rows,
        [False, True, True, True, True, True, True],
    )


def _before_after(outputs: dict[str, dict[str, Any]], prompts: Sequence[str], n: int = 6) -> str:
    names = list(outputs)
    seen: set[str] = set()
    idx = []
    for i, p in enumerate(prompts):
        if p not in seen:
            seen.add(p)
            idx.append(i)
        if len(idx) == n:
            break
    head = "<tr><th>prompt</th>" + "".join(f"<th>{esc(nm)}</th>" for nm in names) + "</tr>"
    body = ""
    for i in idx:
        cells = "".join(
            f'<td><div class="resp">{esc(outputs[nm]["texts"][i])}</div>'
            f'<div class="muted">proxy {fmt(outputs[nm]["proxy"][i])} · gold {fmt(outputs[nm]["gold"][i])}</div></td>'
            for nm in names
        )
        body += f'<tr><td class="resp">{esc(prompts[i])}</td>{cells}</tr>'
    return f"<table>{head}{body}</table>"


def _quiz(summary: dict[str, Any]) -> str:
    runs = {r["name"]: r for r in summary["runs"]}
    ok, low = runs.get("sensible-beta"), runs.get("low-beta")
    items = [
        (
            "What is the primary purpose of the reward model?",
            "To predict human preference scores for model outputs: on fresh responses nobody ranked, it "
            f"orders pairs as the simulated human does {summary['rm_heldout_accuracy']:.1%} of the time "
            f"(the annotators' own noise caps this at {summary['rm_noise_ceiling']:.1%}); on topics it "
            f"never saw ranked, {summary.get('rm_heldout_topics_accuracy', float('nan')):.1%}, because it "
            "cannot know which of their statements are factually wrong.",
        ),
        (
            "In the Bradley-Terry loss, what are y_w and y_l?",
            f"The winner and loser of each ranked pair: the demo's {summary.get('n_rankings', '?')} rankings "
            "of 4 responses each give up to 6 (winner, loser) terms.",
        ),
    ]
    if ok and low:
        items += [
            (
                "Why is the KL penalty (β) important?",
                f"It keeps the policy near the original model: with β = {ok['beta']:g} the final KL is "
                f"{ok['kl']:.2f} nats and gold reward moved {ok['gold_reward_base']:+.2f} → {ok['gold_reward_tuned']:+.2f}"
                f"{gain_note(ok, 'gold')}; "
                f"with β = {low['beta']:g} KL reached {low['kl']:.2f}.",
            ),
            (
                "What happens if β is too low?",
                f"The policy over-fits the reward model: proxy reward {low['proxy_reward_base']:+.2f} → "
                f"{low['proxy_reward_tuned']:+.2f} while gold goes {low['gold_reward_base']:+.2f} → "
                f"{low['gold_reward_tuned']:+.2f}; the scan flags {', '.join(low['flagged_tokens'][:4]) or 'nothing'}; "
                f"valid world text {low.get('valid_rate_base', 0):.0%} → {low.get('valid_rate_tuned', 0):.0%}.",
            ),
        ]
    return "<ol>" + "".join(f"<li><b>{esc(q)}</b><br>{esc(a)}</li>" for q, a in items) + "</ol>"


def render_demo_report(
    out: Path,
    summary: dict[str, Any],
    run_dirs: dict[str, Path],
    rm_dir: Path,
    outputs: dict[str, dict[str, Any]],
    prompts: Sequence[str],
) -> Path:
    """Write ``out/report.html``."""
    runs: list[Run] = [load_run(d, name) for name, d in run_dirs.items()]
    rm_html = images_grid([_rm_curve(rm_dir), _accuracy_bar(summary)])
    ppo = ppo_sections(runs)
    # the over-optimization figure (when gold was logged) right under the result's table
    main_figure = [ppo.pop(0)] if ppo and ppo[0][0].startswith("Over-optimization") else []
    sections: list[tuple[str, str]] = [
        (
            "Result",
            "<p>The base policy was tuned with PPO against a reward model trained on simulated "
            "rankings. <b>Proxy</b> reward is the reward model's score; <b>gold</b> reward is the simulated "
            "human's utility, which PPO never sees. Both are measured on held-out topics.</p>"
            + _summary_table(summary),
        ),
        *main_figure,
        (
            "The reward model",
            "<p>Pairwise accuracy against the simulated human's gold utility, on fresh candidate "
            "groups that nobody ranked: for the training prompts (the responses PPO will ask it to "
            "score) and for the held-out topics. On held-out topics it must judge statements it never "
            "saw ranked, and a factual error there is a fact about the topic, not a pattern it could "
            "have learned; that is where its accuracy falls below the ceiling.</p>" + rm_html,
        ),
        *ppo,
    ]
    for r in summary["runs"]:
        sections.append(
            (f"Flagged tokens — {r['name']} vs base (held-out prompts)", _flagged_table(r))
        )
    if summary["runs"] and "verdict" in summary["runs"][0]:
        sections.append(("The verdict without gold, and gold", _verdicts(summary)))
    if summary.get("mitigations"):
        sections.append(("Mitigations, measured against gold", mitigations_section(summary)))
    sections.append(("Before and after, same held-out prompts", _before_after(outputs, prompts)))
    sections.append(("The lesson's quiz, answered by this run", _quiz(summary)))
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in summary.get("stage_seconds", {}).items())
    subtitle = f"wall time {summary['wall_seconds']:.0f} s{machine_note(summary)} — {timing}"
    path = out / "report.html"
    with atomic_open(path) as f:
        f.write(
            page("rlhfkit demo: RLHF on a world with a known truth", sections, subtitle=subtitle)
        )
    return path
