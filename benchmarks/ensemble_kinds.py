"""Reward-model ensembles on the demo world: independent members against heads on one trunk.

What each costs (train-rm wall time on this machine) and what each buys (pairwise accuracy against
the world's gold utility, each member's and each objective's, on fresh groups nobody ranked), on
the rankings of a finished ``rlhfkit demo`` run and with its reward model's settings:

    python benchmarks/ensemble_kinds.py DEMO_OUT [--members 3] [--kinds members heads] [--bootstrap]

Both kinds train from the same rankings, seed and base policy. Prints a table and writes
``DEMO_OUT/ensemble-kinds.json``; the trained ensembles go to ``DEMO_OUT/ensemble-kinds/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demo_out", type=Path, help="a finished `rlhfkit demo --out DIR` directory")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument(
        "--kinds", nargs="+", default=["members", "heads"], choices=["members", "heads"]
    )
    ap.add_argument("--bootstrap", action="store_true", help="each member its own resample")
    args = ap.parse_args(argv)

    import torch

    from rlhfkit import world
    from rlhfkit.demo.evaluate import evaluate_reward_models
    from rlhfkit.demo.sampling import Sampler
    from rlhfkit.demo.settings import DemoSettings
    from rlhfkit.reward import RewardConfig
    from rlhfkit.reward.ensemble import RewardEnsemble, train_ensemble

    out = args.demo_out
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        ap.error(f"{out}/summary.json: {e} (run `rlhfkit demo --out {out}` first)")
    keys = ("rm_epochs", "rm_batch_size", "rm_learning_rate", "eval_groups", "k", "response_length", "temperature")  # fmt: skip
    s = replace(DemoSettings.full(), **{k: summary["settings"][k] for k in keys})
    seed, base_dir = summary["seed"], Path(summary["base_policy"])
    train_prompts = [world.make_prompt(t) for t in world.TRAIN_TOPICS]
    heldout_prompts = [world.make_prompt(t) for t in world.HELDOUT_TOPICS]
    sample = Sampler(1, threads=torch.get_num_threads())
    rows = {}
    try:
        for kind in args.kinds:
            ens_dir = out / "ensemble-kinds" / kind
            t0 = time.perf_counter()
            ens_eval = train_ensemble(
                RewardConfig(
                    model=str(base_dir), data=str(out / "rankings.jsonl"), out=str(ens_dir),
                    eval_split=0.05, epochs=s.rm_epochs, batch_size=s.rm_batch_size,
                    learning_rate=s.rm_learning_rate, warmup_ratio=0.05, seed=seed,
                    overwrite=True, max_length=128, logging_steps=5, ensemble=args.members,
                    ensemble_kind=kind, bootstrap=args.bootstrap, progress=False,
                )
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            scorers = {f"member-{i}": m for i, m in enumerate(RewardEnsemble.from_pretrained(ens_dir).members)}  # fmt: skip
            for objective in ("mean", "worst", "uwo"):
                scorers[objective] = RewardEnsemble.from_pretrained(ens_dir, objective)
            vs_gold = {}
            for name, prompts, offset in (("heldout", train_prompts, 1), ("heldout_topics", heldout_prompts, 3)):  # fmt: skip
                # the same fresh groups as the demo's own evaluation (the same seeds)
                acc = evaluate_reward_models(
                    sample, list(scorers.values()), base_dir, prompts, s.eval_groups, s.k,
                    s.response_length, seed + offset, s.temperature,
                )  # fmt: skip
                vs_gold[name] = {n: a for n, (a, _) in zip(scorers, acc, strict=True)}
                vs_gold[name]["noise_ceiling"] = acc[0][1]
            rows[kind] = {
                "train_seconds": seconds,
                "disagreement_pairs": ens_eval.get("disagreement_pairs"),
                "vs_gold": vs_gold,
            }
            print(f"{kind}: {seconds:.0f} s", file=sys.stderr)
    finally:
        sample.close()
    result = {
        "machine": machine_info(), "demo": str(out), "seed": seed, "members": args.members,
        "bootstrap": args.bootstrap, "single_reward_model": {
            "heldout": summary["rm_heldout_accuracy"],
            "heldout_topics": summary["rm_heldout_topics_accuracy"],
        }, "kinds": rows,
    }  # fmt: skip
    (out / "ensemble-kinds.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"seed {seed}, {args.members} members, {result['machine'].get('cpu', '?')}")
    print("| kind | train-rm s | groups | each member | mean | worst | uwo | single RM | ceiling |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, r in rows.items():
        for name in ("heldout", "heldout_topics"):
            v = r["vs_gold"][name]
            each = ", ".join(f"{v[f'member-{i}']:.3f}" for i in range(args.members))
            print(
                f"| {kind} | {r['train_seconds']:.0f} | {name} | {each} | {v['mean']:.3f} | "
                f"{v['worst']:.3f} | {v['uwo']:.3f} | {result['single_reward_model'][name]:.3f} | "
                f"{v['noise_ceiling']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
