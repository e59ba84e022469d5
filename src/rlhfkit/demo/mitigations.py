"""``rlhfkit demo --mitigations``: what helps against over-optimization, measured against gold.

- **4b.** A reward-model ensemble (``settings.ensemble_members`` independent members on the same
  rankings, differing by seed: head initialization and data order), evaluated against gold like
  the single reward model.
- **5.** (in :func:`rlhfkit.demo.stages.tune_policies`) the low β again, on the ensemble's
  worst-case and uncertainty-weighted objectives (Coste et al. 2023).
- **6b.** Best-of-n from the base policy on held-out prompts, n = 1, 2, 4, …, chosen by the single
  reward model and by each ensemble objective, with proxy and gold against ``√KL_bon`` and
  Gao et al.'s best-of-n fit (``R(d) = d(α − β·d)``) through the gold points.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit import world
from rlhfkit.demo.evaluate import evaluate_reward_models
from rlhfkit.demo.stages import Stages
from rlhfkit.runtime.cores import torch_threads
from rlhfkit.runtime.io import write_json


def train_ensemble(
    st: Stages, base_dir: Path, train_prompts: list[str], heldout_prompts: list[str]
) -> tuple[Path, Any, dict[str, Any]]:
    """4b. ``train-rm --ensemble M`` on the demo's rankings, with the single reward model's
    settings; each member and the ensemble's mean scored against gold on the same fresh groups
    as stage 4. Returns the directory, the loaded ensemble and its evaluation."""
    from rlhfkit.reward import RewardConfig
    from rlhfkit.reward.ensemble import RewardEnsemble
    from rlhfkit.reward.ensemble import train_ensemble as train

    s = st.s
    t0 = st.start("4b", f"training a reward-model ensemble of {s.ensemble_members} members")
    ens_dir = st.out / "reward-ensemble"
    with torch_threads(s.rm_threads):  # the single reward model's, as checked
        ens_eval = train(
            RewardConfig(
                model=str(base_dir), data=str(st.out / "rankings.jsonl"), out=str(ens_dir),
                eval_split=0.05, epochs=s.rm_epochs, batch_size=s.rm_batch_size,
                learning_rate=s.rm_learning_rate, warmup_ratio=0.05, seed=st.seed,
                overwrite=True, max_length=128, logging_steps=5, ensemble=s.ensemble_members,
                report_to=list(st.report_to),
            )
        )  # fmt: skip
    ensemble = RewardEnsemble.from_pretrained(ens_dir)
    vs_gold: dict[str, Any] = {}
    for name, prompts, offset in (("heldout", train_prompts, 1), ("heldout_topics", heldout_prompts, 3)):  # fmt: skip
        *each, mean = evaluate_reward_models(
            st.sample, [*ensemble.members, ensemble], base_dir, prompts, s.eval_groups, s.k,
            s.response_length, st.seed + offset, s.temperature,
        )  # fmt: skip
        vs_gold[name] = {"members": [a for a, _ in each], "mean": mean[0], "noise_ceiling": mean[1]}
    ens_eval = {**ens_eval, "vs_gold": vs_gold}
    write_json(ens_dir / "eval.json", ens_eval)
    st.seconds["reward_ensemble"] = time.perf_counter() - t0
    members = ", ".join(f"{a:.3f}" for a in vs_gold["heldout"]["members"])
    st.say(
        f"      members' accuracy vs gold on unranked groups {members}; their mean "
        f"{vs_gold['heldout']['mean']:.3f}; held-out pairs the members split "
        f"{ens_eval.get('disagreement_pairs') or 0.0:.1%}"
    )
    return ens_dir, ensemble, ens_eval


def best_of_n_curves(
    st: Stages, base_dir: Path, reward_model: Any, ensemble: Any, heldout_prompts: list[str]
) -> dict[str, Any]:
    """6b. ``settings.bon_max_n`` samples per held-out prompt from the base policy, scored by the
    reward model, each ensemble member and gold; best-of-n for n = 1, 2, 4, … chosen by the
    reward model (``single``) and by each ensemble objective. Returns, per chooser, the points
    (n, KL, proxy, gold, and the gold gained over n = 1) and the best-of-n fit through the gold
    gains; ``out/best-of-n.json``."""
    from rlhfkit.hacking.overoptimization import best_of_n_curve, fit_gao
    from rlhfkit.losses import ensemble_reward

    s = st.s
    n_max, n_prompts = s.bon_max_n, s.bon_prompts
    t0 = st.start(
        "6b", f"best-of-n from the base policy: {n_max} samples for each of {n_prompts} held-out prompts"
    )  # fmt: skip
    prompts = [heldout_prompts[i % len(heldout_prompts)] for i in range(n_prompts)]
    flat = [p for p in prompts for _ in range(n_max)]
    texts, ended = st.sample(base_dir, flat, s.response_length, st.seed + 5, s.temperature)
    shape = (n_prompts, n_max)
    proxy = reward_model.score(flat, texts).numpy().reshape(shape)
    gold = np.asarray(world.evaluate_texts(flat, texts, ended).gold, dtype=float).reshape(shape)
    members = ensemble.score_members(flat, texts)  # (M, N)
    choosers = {"single": proxy}
    for objective in ("mean", "worst", "uwo"):
        choosers[objective] = ensemble_reward(members, objective, 1.0).numpy().reshape(shape)
    ns = [2**i for i in range(int(np.log2(n_max)) + 1)]
    curves: dict[str, Any] = {}
    for name, select in choosers.items():
        points = best_of_n_curve(proxy, gold, ns, select=select)
        gold0, proxy0 = points[0].gold, points[0].proxy
        d = [float(np.sqrt(p.kl)) for p in points]
        fit = fit_gao(d, [p.gold - gold0 for p in points], "bon")
        rows = [
            {"n": p.n, "kl": p.kl, "proxy": p.proxy, "gold": p.gold,
             "proxy_gain": p.proxy - proxy0, "gold_gain": p.gold - gold0}
            for p in points
        ]  # fmt: skip
        curves[name] = {"points": rows, "gao_fit": fit.to_dict() if fit is not None else None}
    result = {"prompts": n_prompts, "samples_per_prompt": n_max, "choosers": curves}
    write_json(st.out / "best-of-n.json", result)
    st.seconds["best_of_n"] = time.perf_counter() - t0
    for name, c in curves.items():
        last = c["points"][-1]
        st.say(
            f"      best-of-{last['n']} by {name:>6}: proxy {last['proxy_gain']:+.2f}, "
            f"gold {last['gold_gain']:+.2f} over one sample"
        )
    return result
