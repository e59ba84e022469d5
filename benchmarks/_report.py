"""The benchmark's results as Markdown (printed, and written to docs/benchmarks.md by the full run)."""

from __future__ import annotations

import statistics

# PPO figures without a suffix: each tool as its users run it (ours: the default critic, here a
# value head on the RM's frozen trunk plus one on the policy trunk; TRL: the separate value model it requires). `_same_critic`: ours with
# a separate critic too, the same work as TRL.
TARGETS = {
    "rm_speedup": (">=", 4.0),
    "ppo_speedup": (">=", 3.0),
    "ppo_speedup_same_critic": (">=", 3.0),
    "ppo_speedup_large": (">=", 1.7),
    "ppo_speedup_large_same_critic": (">=", 1.7),
    "ppo_peak_rss_ratio": ("<=", 0.6),
    "ppo_peak_rss_ratio_same_critic": ("<=", 0.6),
    "ppo_peak_rss_ratio_large": ("<=", 0.6),
    "ppo_peak_rss_ratio_large_same_critic": ("<=", 0.6),
    "mfu_train": (">=", 0.40),
}

# Row labels of the PPO sides.
SIDE_LABEL = {
    "ours-default": "ours, default critic (heads on the RM's frozen trunk + the policy trunk)",
    "ours": "ours, separate critic (TRL's work)",
    "trl": "trl",
}
SHORT = {"ours-default": "ours", "ours": "ours (separate critic)", "trl": "TRL"}


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _verdict(key: str, value: float) -> str:
    op, target = TARGETS[key]
    ok = value >= target if op == ">=" else value <= target
    return f"{'met' if ok else 'NOT met'} (target {'≥' if op == '>=' else '≤'} {target:g})"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def describe_failure(run: dict) -> str:
    """A run that failed (``vs_trl.failed_run``), in a few words."""
    after = run.get("last_logged_episode")
    where = f" after episode {after}" if after is not None else ""
    return f"failed{where}: {run['error']}"


def _learning_summary_row(res: dict) -> str:
    """The summary's row for the longer run. A side whose training failed loses to one that
    finished; if both failed, there is nothing to compare."""
    lp = res["ppo_learn"]
    n = lp["settings"]["total_episodes"]
    head = f"| PPO final reward / gold, ~20M, {n} episodes (ours default / TRL; one run each) | "
    ours_r, trl_r = res["ppo_learn_final_reward_ours"], res["ppo_learn_final_reward_trl"]
    ours_g, trl_g = res["ppo_learn_final_gold_ours"], res["ppo_learn_final_gold_trl"]
    if ours_r is not None and trl_r is not None:
        return (
            f"{head}{ours_r:.3f} / {trl_r:.3f}; gold {ours_g:.3f} / {trl_g:.3f} | ours ≥ TRL: "
            f"{_met(ours_r >= trl_r)} (reward), {_met(ours_g >= trl_g)} (gold) |"
        )
    failed = {
        side: next(r for r in lp["runs"][side] if r.get("failed"))
        for side in ("ours-default", "trl")
        if any(r.get("failed") for r in lp["runs"][side])
    }
    ours = f"{ours_r:.3f} (gold {ours_g:.3f})" if ours_r is not None else "failed"
    trl = f"{trl_r:.3f} (gold {trl_g:.3f})" if trl_r is not None else "failed"
    verdict = "met" if ours_r is not None else "NOT met"
    why = "; ".join(f"{SHORT[side]} {describe_failure(r)}" for side, r in failed.items())
    return f"{head}{ours} / {trl} | ours ≥ TRL: {verdict} ({why}) |"


def _ours_vs_trl(res: dict, key: str, suffix: str) -> str:
    """Verdict of each of our PPO sides against TRL on a final-policy figure."""
    trl = res.get(f"ppo_final_{key}{suffix}_trl", float("nan"))
    return ", ".join(
        f"{_met(res.get(f'ppo_final_{key}{suffix}_{tail}', float('nan')) >= trl)} ({label})"
        for tail, label in (("ours", "default"), ("ours_same_critic", "same critic"))
    )


def render(res: dict, argv: list[str]) -> str:
    m = res["machine"]
    cmd = "python benchmarks/vs_trl.py " + " ".join(argv)
    lines = [
        "# Benchmarks: rlhfkit vs TRL",
        "",
        f"Measured by `{cmd.strip()}` (preset `{res['preset']}`, {res['runs']} alternating runs per "
        f"side, medians; {res['seconds'] / 60:.1f} minutes in total).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
        f"{m['cpu_capability']}, {m['memory_gb']} GB; load average at start {m['load_average']}; "
        f"torch {m['torch']}, transformers {m['transformers']}, accelerate {m['accelerate']}, "
        f"trl {m['trl']}, rlhfkit {m['rlhfkit']}, Python {m['python']}.",
        f"Measured fp32 matmul peak: **{res['matmul_peak_gflops']:.1f} GFLOP/s**.",
        *(
            [
                "",
                f"{len(res['reused'])} measurements were reused with `--reuse` from earlier "
                "invocations in the same work directory (same specs, and the same code for what "
                "they measure): " + ", ".join(f"`{t}`" for t in res["reused"]) + ". The minutes "
                "above count the last invocation only.",
            ]
            if res.get("reused")
            else []
        ),
        *(
            [
                "",
                f"**The machine was shared during this run** (load average {m['load_average']} at "
                f"the start, {res.get('load_average_end')} at the end, on {m['cores']} cores): "
                "absolute figures are lower and noisier than on an idle machine; the ratios come "
                "from alternating runs under the same load.",
            ]
            if m["load_average"][0] > 0.75 * (m["cores"] or 1)
            else []
        ),
        "",
        "## Summary",
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
    ]
    for key in TARGETS:
        if key in res:
            unit = "" if key.startswith("mfu") or "rss" in key else "×"
            v = f"{res[key]:.1%}" if key.startswith("mfu") else f"{res[key]:.2f}{unit}"
            lines.append(f"| `{key}` | {v} | {_verdict(key, res[key])} |")
    lines.append(
        f"| RM held-out accuracy (ours / TRL) | {res['rm_accuracy_ours']:.3f} / "
        f"{res['rm_accuracy_trl']:.3f} | ours ≥ TRL: "
        f"{_met(res['rm_accuracy_ours'] >= res['rm_accuracy_trl'])} |"
    )
    for pname, suffix in (("tiny", ""), ("large", "_large")):
        if f"ppo_final_reward{suffix}_ours" not in res:
            continue
        size = "tiny" if pname == "tiny" else "~20M"
        vals, golds = (
            " / ".join(
                f"{res.get(f'ppo_final_{k}{suffix}_{tail}', float('nan')):.3f}"
                for tail in ("ours", "ours_same_critic", "trl")
            )
            for k in ("reward", "gold")
        )
        init = res["ppo"][pname]["initial"]
        n = res["ppo"][pname]["settings"]["total_episodes"]
        lines.append(
            f"| PPO final reward, {size}, {n} episodes (ours default / ours same critic / TRL; "
            f"initial {init['reward']:.3f}) | {vals} | ours ≥ TRL: "
            f"{_ours_vs_trl(res, 'reward', suffix)} |"
        )
        lines.append(
            f"| PPO final gold, {size}, {n} episodes (same order; initial {init['gold']:.3f}) | "
            f"{golds} | ours ≥ TRL: {_ours_vs_trl(res, 'gold', suffix)} |"
        )
    if "ppo_learn" in res:
        lines.append(_learning_summary_row(res))
    if any(k in res for k in ("ppo_speedup_same_critic", "ppo_speedup_large_same_critic")):
        lines += [
            "",
            "PPO figures without a suffix compare each tool as its users run it: ours with its "
            "default critic (`PPOConfig.critic='auto'`, which here, with a reward model that "
            "reads the policy's tokens, is `frozen-reward-model+head`: a value head on the reward "
            "model's frozen trunk plus one on the policy trunk), TRL "
            "with the separate `value_model` its PPO trainer requires (it has no other "
            "option). `_same_critic`: ours with a separate critic initialised from the reward "
            "model too (`critic='reward-model'`), the same work as TRL.",
        ]

    # Reward model
    rm = res["rm"]
    s = rm["settings"]
    p = s["model_params"]
    lines += [
        "",
        "## Reward model",
        "",
        f"Backbone: GPT-2, {p['n_layer']} layers × {p['n_embd']} dims ({p['total'] / 1e6:.2f}M "
        f"parameters, vocabulary {p['vocab']}). Data: synthetic rankings of K = {s['k']} responses "
        "(gold quality = mean word value; no ties). Ours: native rankings, "
        f"{s['rankings_per_batch']} rankings per step. TRL `RewardTrainer`: the same rankings as "
        f"{s['k'] * (s['k'] - 1) // 2} explicit-prompt pairs each, "
        f"{s['rankings_per_batch'] * s['k'] * (s['k'] - 1) // 2} pairs per step (the same "
        f"comparisons per optimizer step). Both: {s['epochs']} epochs, AdamW lr {s['learning_rate']:g} "
        "linear decay, no warmup, ε 1e-8, weight decay 0, grad-norm clip 1.0, max length "
        f"{s['max_length']}, seed {s['seed']}. TRL: `bf16=False, fp16=False, "
        "gradient_checkpointing=False, use_cpu=True, eval_strategy='no', save_strategy='no', "
        "report_to='none', disable_tqdm=True, logging_steps=10` (ours logs every 10 steps too). "
        "Time = the training loop (TRL: `trainer.train()`; ours: the loop inside "
        "`train_reward_model`, reported as `train_seconds`); accuracy = one shared function over "
        "every held-out strict pair.",
        "",
        "| side | comparisons/s | held-out accuracy | peak RSS (MiB) | GC (s) | process (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for side in ("ours", "trl"):
        rows = rm["runs"][side]
        lines.append(
            f"| {side} | {_med(rows, 'comparisons_per_s'):.0f} | {_med(rows, 'heldout_accuracy'):.3f} | "
            f"{_med(rows, 'peak_rss_mb'):.0f} | {_med(rows, 'gc_seconds'):.2f} | "
            f"{_med(rows, 'process_seconds'):.1f} |"
        )

    # PPO
    lines += ["", "## PPO", ""]
    any_spec = next(iter(res["ppo"].values()))["settings"]
    lines.append(
        "Every side: the policy checkpoint is also the frozen reference; the reward model is the "
        "same rlhfkit-trained GPT-2 RM (raw scores, no normalization; its size is given with each "
        "policy below: the tiny policy's is a 2 × 64 GPT-2, the ~20M policy's is as large as the "
        "policy, as TRL's examples run it). The critic: TRL's "
        "`value_model`, a separate model initialised from that RM; ours in two ways, alternated "
        "with TRL in the same runs: `critic='reward-model'` (the same separate critic: TRL's "
        "work) and rlhfkit's default `critic='auto'` (here `frozen-reward-model+head`: a value "
        "head on the reward model's frozen trunk, which reads each rollout once, warm-started "
        "from the RM's score layer like TRL's value model, plus a zero-initialised head on the "
        "policy trunk; how our users run it; TRL cannot do that). "
        f"{any_spec['num_mini_batches']} minibatches × {any_spec['ppo_epochs']} PPO epochs per batch; "
        f"temperature {any_spec['temperature']}, β {any_spec['kl_coef']} (k1, fixed), AdamW lr "
        f"{any_spec['learning_rate']:g} linear decay, ε 1e-5, no gradient clipping (TRL's PPO does "
        "not clip; ours with `max_grad_norm=0`), EOS stops a response, whole-batch rollout "
        "forwards. TRL: `bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, "
        "num_sample_generations=0, eval_strategy='no', save_strategy='no', report_to='none', "
        "disable_tqdm=True`. Ours also writes metrics.jsonl every update and saves the final "
        "policy inside `train()` (timed). Time = `trainer.train()`. Final reward = one shared "
        "function: sample the 64 prompts once with the final policy (temperature as in training) "
        "and score with the RM; gold = the world's quality function."
    )
    for pname, block in res["ppo"].items():
        s, pp, runs = block["settings"], block["policy_params"], block["runs"]
        lines += [
            "",
            f"### {pname} policy: {pp['total'] / 1e6:.2f}M parameters ({pp['n_layer']} layers × "
            f"{pp['n_embd']} dims); batch {s['batch_size']}, response length {s['response_length']}, "
            f"{s['total_episodes']} episodes",
            *(
                [
                    "",
                    f"Reward model (and TRL's value model, and our separate critic): GPT-2, "
                    f"{rp['n_layer']} layers × {rp['n_embd']} dims, {rp['total'] / 1e6:.2f}M "
                    "parameters, trained by rlhfkit on world rankings (held-out accuracy "
                    f"{block.get('reward_model_accuracy') or float('nan'):.3f}).",
                ]
                if (rp := block.get("reward_model_params"))
                else []
            ),
            "",
            "| side | episodes/s | peak RSS (MiB) | RSS before training (MiB) | GC (s) | final reward | final gold | process (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| initial policy | | | | | {block['initial']['reward']:.3f} | {block['initial']['gold']:.3f} | |",
        ]
        for side in ("ours-default", "ours", "trl"):
            if side not in runs:
                continue
            rows = runs[side]
            lines.append(
                f"| {SIDE_LABEL[side]} | {_med(rows, 'episodes_per_s'):.2f} | {_med(rows, 'peak_rss_mb'):.0f} | "
                f"{_med(rows, 'rss_start_mb'):.0f} | {_med(rows, 'gc_seconds'):.2f} | "
                f"{_med(rows, 'final_reward'):.3f} | {_med(rows, 'final_gold'):.3f} | "
                f"{_med(rows, 'process_seconds'):.1f} |"
            )

    lp = res.get("ppo_learn")
    if lp:
        s, runs = lp["settings"], lp["runs"]
        lines += [
            "",
            f"### Learning over a longer run: {s['name']} policy, {s['total_episodes']} episodes "
            f"({s['total_episodes'] // s['batch_size']} updates), one run per side",
            "",
            "The same settings as above with more episodes (the linear learning-rate decay "
            "stretched over them): ours with its default critic vs TRL, alternated, to compare "
            "learning after more than a handful of updates. One run each: the speed here is a "
            "check, the medians above are the figures.",
            "",
            "| side | episodes/s | peak RSS (MiB) | final reward | final gold | process (s) |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| initial policy | | | {lp['initial']['reward']:.3f} | {lp['initial']['gold']:.3f} | |",
        ]
        for side in ("ours-default", "trl"):
            rows = [r for r in runs[side] if not r.get("failed")]
            for failed in (r for r in runs[side] if r.get("failed")):
                lines.append(
                    f"| {SIDE_LABEL[side]} | {describe_failure(failed)} (its output: `{failed['log']}`) "
                    f"| | | | {failed['process_seconds']:.1f} |"
                )
            if rows:
                lines.append(
                    f"| {SIDE_LABEL[side]} | {_med(rows, 'episodes_per_s'):.2f} | "
                    f"{_med(rows, 'peak_rss_mb'):.0f} | {_med(rows, 'final_reward'):.3f} | "
                    f"{_med(rows, 'final_gold'):.3f} | {_med(rows, 'process_seconds'):.1f} |"
                )

    # MFU
    mf = res["mfu"]
    lines += [
        "",
        "## Model-FLOPs utilization (ours)",
        "",
        f"Policy `{mf['model']}` ({mf['policy_params'] / 1e6:.2f}M parameters). Model FLOPs per "
        "update, counted analytically (`benchmarks/_ppo.py: ppo_flops`): a forward pass of T "
        "tokens costs 2·N_non-embedding·T + 4·L·T²·d (attention) + 2·d·V per position whose "
        "logits are computed; backward = 2 × forward. Training phase = PPO epochs × batch × 3 "
        "forwards of policy (logits on the R+1 response positions) + critic; generation, the "
        "rollout forwards (policy, reference, critic) and the reward model are counted "
        "separately. Seconds = median over updates (first update left out) of the trainer's own "
        "`time/*` metrics. MFU = FLOPs / seconds / measured fp32 matmul peak. `mfu_train` is "
        "the training phase with the separate critic (the run that does TRL's work); with our "
        "default critic (the RM's frozen trunk plus a head on the policy trunk) the critic's one "
        "forward per rollout is in rollout_forward, and training adds no critic FLOPs (the heads' "
        "d → 1 projections are not counted).",
        "",
        "| critic | phase | GFLOP per update | seconds per update | GFLOP/s | MFU |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, m_ in (
        ("separate", mf),
        ("default (frozen RM trunk + policy head)", res.get("mfu_default")),
    ):
        for phase in ("train", "rollout_forward", "generate", "reward"):
            if m_ and phase in m_:
                lines.append(
                    f"| {label} | {phase} | {m_['flops_per_update'][phase] / 1e9:.2f} | "
                    f"{m_[f'{phase}_seconds']:.3f} | {m_[f'{phase}_gflops']:.1f} | "
                    f"{m_[phase]:.1%} |"
                )

    tp = mf.get("train_profiled")
    if tp:
        lines += [
            "",
            "The training phase of both sides measured under the profiler (below), with the same "
            "FLOP count: forward + backward + optimizer step (+ our grad norm) seconds per update. "
            "TRL logs no phase times, so this is the only like-for-like view of where the "
            "compute-bound part stands; the profiler's overhead lowers both a little.",
            "",
            "| side | train seconds per update (profiled) | MFU |",
            "| --- | --- | --- |",
        ]
        for side, v in tp.items():
            lines.append(f"| {side} | {v['seconds_per_update']:.3f} | {v['mfu']:.1%} |")

    if res.get("growth"):
        lines += [
            "",
            "## How our cost grows",
            "",
            "Ours, each policy with the PPO settings above and the separate critic "
            "(`critic='reward-model'`, the same work as TRL); the batch and the response length "
            "doubled in turn (episodes/s over the whole `train()`, first update included).",
            "",
            "| policy | updates | batch | response length | episodes/s | tokens/s | peak RSS (MiB) | RSS before training (MiB) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for g in res["growth"]:
            name = g.get("model", "tiny")
            size = f" ({g['policy_params'] / 1e6:.2f}M)" if "policy_params" in g else ""
            lines.append(
                f"| {name}{size} | {g.get('updates', '')} | {g['batch']} | {g['response_length']} | "
                f"{g['episodes_per_s']:.2f} | {g['episodes_per_s'] * g['response_length']:.0f} | "
                f"{g['peak_rss_mb']:.0f} | {g['rss_start_mb']:.0f} |"
            )

    for pname, prof in res.get("profile", {}).items():
        lines += _profile_section(pname, prof)
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "pip install -e '.[bench]'",
        "python benchmarks/vs_trl.py --quick --json bench.json   # a few minutes",
        "python benchmarks/vs_trl.py --json bench.json           # the full run; rewrites this page",
        "```",
        "",
    ]
    return "\n".join(lines)


# Phases of each side's profile, in rows both sides share. Ours: the trainer's methods; TRL: its
# module-level helpers (its policy logprobs come from the generation logits, so its rollout
# forwards are the reference and the critic only).
_ROWS = [
    ("generation", {"ours": ["generation"], "trl": ["generation (logits of every step kept)"]}),
    ("rollout forwards (policy, reference, critic)", {
        "ours": ["rollout forwards (policy+reference+critic)"],
        "trl": ["reference forward", "rollout critic forward"]}),
    ("reward model", {"ours": ["reward model (decode, tokenize, forward)"],
                      "trl": ["reward model forward"]}),
    ("train forward (policy + critic)", {"ours": ["train forward"], "trl": ["train forward"]}),
    ("train backward", {"ours": ["train backward"], "trl": ["train backward"]}),
    ("optimizer step", {"ours": ["optimizer step"], "trl": ["optimizer step"]}),
    ("grad norm", {"ours": ["grad norm"], "trl": []}),
    ("explicit gc.collect()", {"ours": [], "trl": ["gc.collect() called explicitly"]}),
]  # fmt: skip


def _profile_section(pname: str, prof: dict) -> list[str]:
    sides = [side for side in ("ours", "trl") if side in prof]
    if not sides:  # an older result: one side, not keyed by side
        prof, sides = {"ours": prof}, ["ours"]
    first = prof[sides[0]]
    lines = [
        "",
        f"## Profile of a PPO update: {pname} policy ({first['updates']} updates under the profiler)",
        "",
        "Phases timed by wrapping each trainer's methods and helpers from outside (nothing in "
        "either library is changed); 'the rest' = wall time minus the phases above it (Python "
        "between the phases: advantages, statistics, logging, the scheduler). GC from "
        "`gc.callbacks` (automatic and explicit collections). 'Outside torch ops' = wall time "
        "minus the self time of every torch operator (`torch.profiler`): Python, Hugging Face "
        "module code, dispatch, and the profiler's own overhead. The profiler slows both sides; "
        "shares are what to read here, the timed runs above give the speed.",
        "",
        "| where | " + " | ".join(f"{s_} s | {s_} share" for s_ in sides) + " |",
        "| --- |" + " --- | --- |" * len(sides),
    ]
    table: dict[str, dict[str, float]] = {}
    for side in sides:
        phases = prof[side]["phases"]
        covered = 0.0
        for row, keys in _ROWS:
            v = sum(phases.get(k, 0.0) for k in keys[side])
            table.setdefault(row, {})[side] = v
            covered += v
        wall = prof[side]["wall_seconds"]
        table.setdefault("the rest", {})[side] = wall - covered
        table.setdefault("**wall**", {})[side] = wall
        table.setdefault("garbage collection (all)", {})[side] = prof[side]["gc_seconds"]
        table.setdefault("inside torch ops", {})[side] = prof[side]["torch_op_seconds"]
        table.setdefault("outside torch ops", {})[side] = prof[side]["outside_ops_seconds"]
    for row, vals in table.items():
        cells = []
        for side in sides:
            v, wall = vals.get(side, 0.0), prof[side]["wall_seconds"]
            cells.append(f"{v:.3f} | {v / wall:.1%}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for side in sides:
        lines += [
            "",
            f"Top operators by self time ({side}, {prof[side]['torch_op_calls']} operator calls):",
            "",
            "| op | self s | calls |",
            "| --- | --- | --- |",
        ]
        for op in prof[side]["top_ops"][:8]:
            lines.append(f"| `{op['op']}` | {op['self_s']:.3f} | {op['calls']} |")
    return lines
