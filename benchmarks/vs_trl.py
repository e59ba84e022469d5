"""rlhfkit vs Hugging Face TRL, side by side on this machine.

    python benchmarks/vs_trl.py [--quick] [--json FILE] [--runs N]

Measures, on the same synthetic data and locally built models (no download):

- reward-model training: comparisons/s on K = 4 rankings (a ranking counts as 6 comparisons; TRL
  gets the same rankings as 6 pairs each) and held-out pairwise accuracy after the same epochs;
- PPO: episodes/s, peak RSS of the process, and the reward of the final policy after the same
  episodes, with a tiny policy and a ~20M-parameter one; ours twice, alternated with TRL: with
  rlhfkit's default critic (here a value head on the reward model's frozen trunk plus one on the
  policy trunk: the headline ``ppo_speedup*`` and ``ppo_peak_rss_ratio*``) and with a separate critic like TRL's ``value_model`` (the same work:
  ``*_same_critic``); plus a longer ~20M run to compare learning (full run);
- model-FLOPs utilization of our PPO training phase against this machine's fp32 matmul peak,
  measured in the same run;
- how our cost grows when the response length and the batch size double;
- a profile of our PPO update (where the seconds go).

Every measurement runs in its own process, ours and TRL's alternating; each figure is the median
of ``--runs`` runs and each ratio is computed from medians of this run. TRL is configured fairly
for a CPU (fp32, no gradient checkpointing, ``use_cpu``, no eval/save/trackers). The full run
(without ``--quick``) also writes docs/benchmarks.md. Needs ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _world  # noqa: E402
from _machine import machine_info  # noqa: E402
from _report import describe_failure  # noqa: E402

# ------------------------------------------------------------------------------ presets

PRESETS: dict[str, dict] = {
    # Seconds: what the test suite runs (checks the plumbing, not the speed).
    "tiny": {
        "runs": 1,
        "rm": {"n_train": 48, "n_eval": 16, "layers": 1, "dim": 32, "heads": 2, "batch": 8,
               "epochs": 1, "lr": 1e-3},
        "ppo_rm": {"n_train": 64, "epochs": 1},
        "ppo": {"tiny": {"layers": 1, "dim": 32, "heads": 2, "batch": 8, "response": 8,
                         "episodes": 16}},
        # The MFU from the PPO runs above, as the full preset takes it (no extra process).
        "mfu_model": "tiny",
        "growth": [{"model": "tiny", "batch": 8, "response": 8, "updates": 1, "doublings": 1}],
        "profile": ["tiny"],
    },
    "quick": {
        "runs": 3,
        "rm": {"n_train": 384, "n_eval": 128, "layers": 2, "dim": 128, "heads": 4, "batch": 16,
               "epochs": 2, "lr": 1e-3},
        "ppo_rm": {"n_train": 768, "epochs": 2},
        "ppo": {"tiny": {"layers": 2, "dim": 64, "heads": 2, "batch": 32, "response": 16,
                         "episodes": 256}},
        # Ours only, for the MFU figure (TRL at this size is the full run's job): 7 updates, so
        # that the median over the 6 after the first is steadier than 3 updates' median of 2.
        "mfu_only": {"large": {"layers": 6, "dim": 512, "heads": 8, "batch": 32, "response": 32,
                               "episodes": 224}},
        "mfu_model": "large",
        "growth": None,
        "profile": ["tiny"],
    },
    "full": {
        "runs": 3,
        "rm": {"n_train": 512, "n_eval": 256, "layers": 4, "dim": 128, "heads": 4, "batch": 16,
               "epochs": 2, "lr": 1e-3},
        "ppo_rm": {"n_train": 1024, "epochs": 2},
        "ppo": {
            "tiny": {"layers": 2, "dim": 64, "heads": 2, "batch": 32, "response": 16,
                     "episodes": 512},
            # The reward model (and so TRL's value model and our separate critic) as large as
            # the policy, as TRL's own examples run it; trained by rlhfkit like the small one.
            "large": {"layers": 6, "dim": 512, "heads": 8, "batch": 32, "response": 32,
                      "episodes": 160,
                      "rm": {"layers": 6, "dim": 512, "heads": 8, "lr": 3e-4,
                             "n_train": 1024, "epochs": 2}},
        },
        "mfu_model": "large",
        # Ours only: batch and response length doubled in turn, for both policies.
        # (The models have 64 positions: a prompt of ≤ 10 tokens + 4 × 12 response tokens fit.)
        "growth": [{"model": "tiny", "batch": 16, "response": 12, "updates": 4},
                   {"model": "large", "batch": 16, "response": 12, "updates": 2}],
        "profile": ["tiny", "large"],
        # Learning, our default critic vs TRL: the ~20M policy for 3× the episodes above (5
        # updates are too few to tell who learns better), one run each.
        "learn": {"model": "large", "episodes": 480, "runs": 1},
    },
}  # fmt: skip

# The PPO sides, alternated: ours with rlhfkit's default critic (here a value head on the RM's
# frozen trunk plus one on the policy trunk: how our users run it), ours with a separate critic
# initialised from the RM (the same work as TRL's required `value_model`), and TRL.
PPO_SIDES = ("ours-default", "ours", "trl")

PPO_COMMON = {
    "num_mini_batches": 2,
    "ppo_epochs": 4,
    "temperature": 0.7,
    "kl_coef": 0.05,
    "learning_rate": 3e-4,
    "seed": 0,
}


# ------------------------------------------------------------------------------ helpers


def log(msg: str) -> None:
    print(msg, flush=True)


REUSE = False  # --reuse: keep a finished measurement whose spec is unchanged
REUSED: list[str] = []


def run_job(
    job: str, side: str, spec: dict, work: Path, tag: str, failure_is_a_result: bool = False
) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result.

    ``failure_is_a_result``: a run that fails (a trainer whose loss went NaN, say) returns
    :func:`failed_run`'s record instead of stopping the benchmark; its output is kept in
    ``work/failed-{tag}.log``."""
    spec_path = work / f"spec-{tag}.json"
    result_path = work / f"result-{tag}.json"
    if REUSE and spec_path.exists() and result_path.exists():
        old = json.loads(spec_path.read_text(encoding="utf-8"))
        result = json.loads(result_path.read_text(encoding="utf-8"))
        if old == json.loads(json.dumps(spec)) and "process_seconds" in result:
            log(f"  {tag}: reusing the measurement in {result_path}")
            REUSED.append(tag)
            return result
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / "_worker.py"), job, side, str(spec_path), str(result_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    if proc.returncode != 0 or not result_path.exists():
        if failure_is_a_result:
            log_path = work / f"failed-{tag}.log"
            log_path.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr, encoding="utf-8")
            return failed_run(proc.returncode, proc.stdout, proc.stderr, log_path,
                              time.perf_counter() - t0)  # fmt: skip
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"vs_trl: the {job}/{side} measurement failed (exit {proc.returncode})")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["process_seconds"] = time.perf_counter() - t0
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return result


def failed_run(code: int, stdout: str, stderr: str, log_path: Path, seconds: float) -> dict:
    """The record of a run that failed: its exit code, its last error line, the last episode its
    trainer logged (TRL prints ``'episode': N`` in each logged dict), where its output is kept."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    episodes = re.findall(r"'episode': (\d+)", stdout + stderr)
    return {
        "failed": True,
        "exit_code": code,
        "error": lines[-1] if lines else f"exit {code} with no message",
        "last_logged_episode": int(episodes[-1]) if episodes else None,
        "log": str(log_path),
        "process_seconds": seconds,
    }


def alternate(
    job: str,
    spec: dict,
    runs: int,
    work: Path,
    tag: str,
    key: str,
    sides: tuple[str, ...] = ("ours", "trl"),
    failure_is_a_result: bool = False,
) -> dict:
    """ours, TRL, ours, TRL, ... ``runs`` times each; returns every result per side. PPO run i
    uses seed ``spec["seed"] + i`` on every side, so the reward figures are medians over seeds."""
    out: dict[str, list[dict]] = {side: [] for side in sides}
    for i in range(runs):
        run_spec = {**spec, "seed": spec["seed"] + i} if job == "ppo" else spec
        for side in sides:
            r = run_job(job, side, run_spec, work, f"{tag}-{side}-{i}", failure_is_a_result)
            out[side].append(r)
            if r.get("failed"):
                log(f"  {tag} run {i + 1}/{runs} {side:9s}: {describe_failure(r)} "
                    f"(process {r['process_seconds']:.1f} s; output in {r['log']})")  # fmt: skip
                continue
            log(f"  {tag} run {i + 1}/{runs} {side:9s}: {key} {r[key]:.2f}, "
                f"peak RSS {r['peak_rss_mb']:.0f} MiB, process {r['process_seconds']:.1f} s")  # fmt: skip
    return out


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


# ------------------------------------------------------------------------------ setup


def setup(preset: dict, work: Path) -> dict:
    """Data files and models (built once, reused by every run)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rm_p = preset["rm"]
    files: dict = {}
    train = _world.make_rankings(rm_p["n_train"], 4, seed=1)
    held = _world.make_rankings(rm_p["n_eval"], 4, seed=2)
    files["rm_train"] = str(_world.write_jsonl(work / "data/rm_train.jsonl", train))
    files["rm_pairs"] = str(
        _world.write_jsonl(work / "data/rm_pairs.jsonl", _world.to_pairs(train))
    )
    files["rm_eval"] = str(_world.write_jsonl(work / "data/rm_eval.jsonl", held))
    files["rm_model"] = str(
        _world.build_model(work / "models/rm-backbone", rm_p["layers"], rm_p["dim"], rm_p["heads"])
    )
    prompts = [{"prompt": _world.prompt_text(t)} for t in _world.TOPICS]
    files["prompts"] = str(_world.write_jsonl(work / "data/prompts.jsonl", prompts))
    # The reward models that score PPO on both sides, trained by rlhfkit on world rankings: the
    # preset's default (a 2 × 64 GPT-2) and, where a policy names one, a policy-sized one.
    files["ppo_reward_model"] = str(
        ppo_reward_model(work, "ppo-reward-model", {"layers": 2, "dim": 64, "heads": 2,
                         "lr": 1e-3, **preset["ppo_rm"]}, files["rm_eval"])
    )  # fmt: skip
    files["ppo_reward_models"] = {
        name: str(ppo_reward_model(work, f"ppo-reward-model-{name}",
                                   {**preset["ppo_rm"], **p["rm"]}, files["rm_eval"]))
        for name, p in preset["ppo"].items()
        if "rm" in p
    }  # fmt: skip
    models = {}
    for name, p in {**preset["ppo"], **preset.get("mfu_only", {})}.items():
        d = _world.build_model(work / f"models/policy-{name}", p["layers"], p["dim"], p["heads"])
        models[name] = str(d)
    files["policies"] = models
    return files


def ppo_reward_model(work: Path, name: str, p: dict, eval_rankings: str) -> Path:
    """A reward model for PPO (``p``: backbone layers/dim/heads, lr, n_train rankings, epochs),
    trained once by rlhfkit on world rankings and kept in the work directory."""
    out = work / f"models/{name}"
    if (out / "config.json").exists():
        return out
    from rlhfkit.reward_training import RewardConfig, train_reward_model

    data = _world.write_jsonl(
        work / "data/ppo_rm_train.jsonl", _world.make_rankings(p["n_train"], 4, seed=3)
    )
    suffix = "" if name == "ppo-reward-model" else name.removeprefix("ppo-reward-model")
    backbone = _world.build_model(
        work / f"models/ppo-rm-backbone{suffix}", p["layers"], p["dim"], p["heads"], seed=1
    )
    t0 = time.perf_counter()
    res = train_reward_model(
        RewardConfig(
            model=str(backbone), data=str(data), out=str(out), eval_data=eval_rankings,
            epochs=p["epochs"], batch_size=16, learning_rate=p["lr"], normalize=False,
            progress=False, max_length=64,
        )
    )  # fmt: skip
    log(f"  PPO reward model {name} ({p['layers']} × {p['dim']}): held-out accuracy "
        f"{res['accuracy']:.3f}, {time.perf_counter() - t0:.0f} s")  # fmt: skip
    return out


def _rm_accuracy(rm_dir: Path) -> float | None:
    """The held-out accuracy rlhfkit measured when it trained ``rm_dir`` (its eval.json)."""
    path = rm_dir / "eval.json"
    return json.loads(path.read_text(encoding="utf-8")).get("accuracy") if path.exists() else None


def ppo_spec(name: str, p: dict, files: dict, work: Path, threads: int | None) -> dict:
    return {
        "name": name,
        "policy": files["policies"][name],
        "reward_model": files["ppo_reward_models"].get(name, files["ppo_reward_model"]),
        "prompts": files["prompts"],
        "eval_prompts": files["prompts"],
        "out_dir": str(work / "runs"),
        "batch_size": p["batch"],
        "response_length": p["response"],
        "total_episodes": p["episodes"],
        "threads": threads,
        **PPO_COMMON,
    }


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="a few minutes: smaller runs, no ~20M TRL run"
    )
    ap.add_argument("--json", metavar="FILE", help="write the ratios and every figure as JSON")
    ap.add_argument("--runs", type=int, help="alternating runs per side (default: 3)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help=argparse.SUPPRESS)
    ap.add_argument(
        "--work-dir", help="keep models, data and run directories here (default: a temp dir)"
    )
    ap.add_argument("--markdown", metavar="FILE",
                    help="write the report here (default: docs/benchmarks.md for the full run, none otherwise)")  # fmt: skip
    ap.add_argument("--threads", type=int, help="torch threads per run (default: torch's default)")
    ap.add_argument("--reuse", action="store_true",
                    help="with --work-dir: reuse every finished measurement whose spec is unchanged "
                         "(to complete an interrupted run; the report says how many were reused)")  # fmt: skip
    args = ap.parse_args(argv)
    global REUSE
    REUSE = args.reuse
    name = args.preset or ("quick" if args.quick else "full")
    preset = PRESETS[name]
    runs = args.runs or preset["runs"]
    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit("vs_trl: TRL is not installed: pip install -e '.[bench]'") from None

    tmp = None
    if args.work_dir:
        work = Path(args.work_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="rlhfkit-bench-")
        work = Path(tmp.name)
    t_start = time.perf_counter()
    machine = machine_info()
    if args.threads:
        machine["torch_threads"] = args.threads
    log(f"rlhfkit vs TRL ({name}, {runs} alternating runs per side)")
    log("machine: " + json.dumps(machine))

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the setup's reward-model training too
    log("setup: data and models")
    files = setup(preset, work)
    results: dict = {"preset": name, "runs": runs, "machine": machine}

    # fp32 matmul peak, in its own process like everything else.
    peak = run_job("matmul", "-", {"threads": args.threads}, work, "matmul")
    results["matmul_peak_gflops"] = peak["gflops"]
    log(
        f"fp32 matmul peak: {peak['gflops']:.1f} GFLOP/s ({peak['size']}², {peak['threads']} threads)"
    )

    # 1. Reward model.
    rm_p = preset["rm"]
    rm_spec = {
        "model": files["rm_model"], "train_rankings": files["rm_train"],
        "train_pairs": files["rm_pairs"], "eval_rankings": files["rm_eval"],
        "out_dir": str(work / "runs"), "k": 4, "epochs": rm_p["epochs"],
        "rankings_per_batch": rm_p["batch"], "learning_rate": rm_p["lr"], "max_length": 64,
        "seed": 0, "threads": args.threads,
    }  # fmt: skip
    log(f"reward model: {rm_p['n_train']} rankings of 4, {rm_p['epochs']} epochs")
    rm = alternate("rm", rm_spec, runs, work, "rm", "comparisons_per_s")
    results["rm"] = {
        "settings": rm_spec | {"model_params": _world.count_params(Path(files["rm_model"]))},
        "runs": rm,
    }
    results["rm_speedup"] = med(rm["ours"], "comparisons_per_s") / med(
        rm["trl"], "comparisons_per_s"
    )
    results["rm_accuracy_ours"] = med(rm["ours"], "heldout_accuracy")
    results["rm_accuracy_trl"] = med(rm["trl"], "heldout_accuracy")

    # 2. PPO, ours vs TRL.
    log("PPO: initial policy evaluation")
    results["ppo"] = {}
    for pname, p in preset["ppo"].items():
        spec = ppo_spec(pname, p, files, work, args.threads)
        init = run_job("initial_eval", "-", spec, work, f"init-{pname}")
        params = _world.count_params(Path(spec["policy"]))
        log(f"PPO {pname} policy ({params['total'] / 1e6:.2f}M parameters): "
            f"{p['episodes']} episodes, batch {p['batch']}, response {p['response']}")  # fmt: skip
        # ours with TRL's work (separate critic), TRL, and ours as users run it (default critic).
        r = alternate("ppo", spec, runs, work, f"ppo-{pname}", "episodes_per_s", PPO_SIDES)
        results["ppo"][pname] = {
            "settings": spec,
            "policy_params": params,
            "reward_model_params": _world.count_params(Path(spec["reward_model"])),
            "reward_model_accuracy": _rm_accuracy(Path(spec["reward_model"])),
            "initial": init,
            "runs": r,
        }
    # The headline ratios compare each tool as its users run it: ours with its default critic (a
    # value head on the RM's frozen trunk plus one on the policy trunk), TRL with the value model it
    # requires. `_same_critic`: ours with a separate critic too (the same work as TRL).
    for pname, suffix in (("tiny", ""), ("large", "_large")):
        if pname not in results["ppo"]:
            continue
        r = results["ppo"][pname]["runs"]
        for ours, tail in (("ours-default", ""), ("ours", "_same_critic")):
            results[f"ppo_speedup{suffix}{tail}"] = med(r[ours], "episodes_per_s") / med(
                r["trl"], "episodes_per_s"
            )
            results[f"ppo_peak_rss_ratio{suffix}{tail}"] = med(r[ours], "peak_rss_mb") / med(
                r["trl"], "peak_rss_mb"
            )
        for side, tail in (
            ("ours-default", "_ours"),
            ("ours", "_ours_same_critic"),
            ("trl", "_trl"),
        ):
            results[f"ppo_final_reward{suffix}{tail}"] = med(r[side], "final_reward")
            results[f"ppo_final_gold{suffix}{tail}"] = med(r[side], "final_gold")
        results[f"ppo_initial_reward{suffix}"] = results["ppo"][pname]["initial"]["reward"]
        results[f"ppo_initial_gold{suffix}"] = results["ppo"][pname]["initial"]["gold"]

    # 2b. Learning over a longer run: ours as users run it vs TRL.
    if preset.get("learn"):
        lp = preset["learn"]
        p = {**preset["ppo"][lp["model"]], "episodes": lp["episodes"]}
        spec = ppo_spec(lp["model"], p, files, work, args.threads)
        log(
            f"PPO learning: {lp['model']} policy, {lp['episodes']} episodes, ours (default critic) vs TRL"
        )
        # a side whose training fails (diverges to NaN, say) is a result here, not a broken run
        r = alternate("ppo", spec, lp["runs"], work, f"learn-{lp['model']}", "episodes_per_s",
                      ("ours-default", "trl"), failure_is_a_result=True)  # fmt: skip
        results["ppo_learn"] = {
            "settings": spec,
            "initial": results["ppo"][lp["model"]]["initial"],
            "runs": r,
        }
        finished = {side: [x for x in rows if not x.get("failed")] for side, rows in r.items()}
        for side, tail in (("ours-default", "ours"), ("trl", "trl")):
            for figure in ("reward", "gold"):
                results[f"ppo_learn_final_{figure}_{tail}"] = (
                    med(finished[side], f"final_{figure}") if finished[side] else None
                )
        if finished["ours-default"] and finished["trl"]:
            results["ppo_learn_speedup"] = med(finished["ours-default"], "episodes_per_s") / med(
                finished["trl"], "episodes_per_s"
            )

    # 3. MFU of our training phase.
    mfu_name = preset["mfu_model"]
    if mfu_name in results["ppo"]:
        mfu_spec = results["ppo"][mfu_name]["settings"]
        mfu_runs = results["ppo"][mfu_name]["runs"]["ours"]
    else:
        p = preset["mfu_only"][mfu_name]
        mfu_spec = ppo_spec(mfu_name, p, files, work, args.threads)
        log(f"MFU: our PPO with the {mfu_name} policy")
        mfu_runs = [run_job("ppo", "ours", mfu_spec, work, f"mfu-{mfu_name}")]
    results["mfu"] = mfu(mfu_spec, mfu_runs, files, peak["gflops"])
    results["mfu_train"] = results["mfu"]["train"]
    if mfu_name in results["ppo"]:
        # The same for our default critic (a frozen trunk: its FLOPs are in the rollout forward).
        default_runs = results["ppo"][mfu_name]["runs"]["ours-default"]
        results["mfu_default"] = mfu(
            mfu_spec, default_runs, files, peak["gflops"], critic=default_runs[0]["critic"]
        )
        results["mfu_train_default"] = results["mfu_default"]["train"]

    # 4. How cost grows (ours).
    if preset["growth"]:
        results["growth"] = [
            row for g in preset["growth"] for row in growth(g, files, work, args.threads)
        ]

    # 5. Profile of a PPO update, ours and TRL's, same settings.
    results["profile"] = {}
    for pname in preset["profile"]:
        p = {**(preset["ppo"].get(pname) or preset["mfu_only"][pname])}
        p["episodes"] = p["batch"] * 4
        spec = ppo_spec(pname, p, files, work, args.threads)
        results["profile"][pname] = {}
        for side in ("ours", "trl"):
            log(f"profile: {side} PPO, {pname} policy, 4 updates")
            results["profile"][pname][side] = run_job(
                "profile", side, spec, work, f"profile-{pname}-{side}"
            )

    # The training phase of both sides from the profile (TRL logs no phase times): the same
    # model FLOPs over each side's seconds in forward + backward + optimizer (+ our grad norm).
    if mfu_name in results["profile"]:
        prof = results["profile"][mfu_name]
        flops = results["mfu"]["flops_per_update"]["train"]
        results["mfu"]["train_profiled"] = {}
        for side, pr in prof.items():
            sec = sum(pr["phases"].get(k, 0.0) for k in ("train forward", "train backward",
                                                          "optimizer step", "grad norm"))  # fmt: skip
            if sec > 0:
                results["mfu"]["train_profiled"][side] = {
                    "seconds_per_update": sec / pr["updates"],
                    "mfu": flops * pr["updates"] / sec / 1e9 / peak["gflops"],
                }

    results["seconds"] = time.perf_counter() - t_start
    results["reused"] = REUSED
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report = render_markdown(results, argv if argv is not None else sys.argv[1:])
    log("\n" + report)
    if args.json:
        Path(args.json).write_text(json.dumps(_finite(results), indent=2) + "\n", encoding="utf-8")
    md = args.markdown or (str(HERE.parent / "docs/benchmarks.md") if name == "full" else None)
    if md:
        # Keep a hand-written "## Findings" section of the previous page (the generated part is
        # rewritten; the findings are the reader's to update).
        old = Path(md).read_text(encoding="utf-8") if Path(md).exists() else ""
        if "\n## Findings" in old:
            report = report.rstrip("\n") + "\n" + old[old.index("\n## Findings") :]
        Path(md).write_text(report, encoding="utf-8")
        log(f"wrote {md}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def mfu(
    spec: dict, runs: list[dict], files: dict, peak_gflops: float, critic: str = "reward-model"
) -> dict:
    """Model-FLOPs utilization of our PPO phases: model FLOPs per update / seconds / peak.
    ``critic``: the critic the runs trained with (``PPOTrainer.critic_kind``)."""
    from _ppo import ppo_flops
    from transformers import AutoTokenizer

    policy = _world.count_params(Path(spec["policy"]))
    rm = _world.count_params(Path(spec["reward_model"]))
    tok = AutoTokenizer.from_pretrained(spec["policy"])
    prompt_len = max(len(tok(_world.prompt_text(t))["input_ids"]) for t in _world.TOPICS)
    # The critic's backbone: none (a head on the policy trunk), a copy of the policy, or the RM's.
    critic_model = {"head": None, "policy": policy}.get(critic, rm)
    flops = ppo_flops(
        policy, critic_model, rm, spec, prompt_len,
        critic_trained=not critic.startswith("frozen-reward-model"),
    )  # fmt: skip
    out: dict = {"model": spec["name"], "policy_params": policy["total"], "flops_per_update": flops}
    phase_key = {"train": "time/update", "generate": "time/generate",
                 "rollout_forward": "time/forward", "reward": "time/score"}  # fmt: skip
    for phase, key in phase_key.items():
        # Median over updates, then over runs; the first update (warm-up) is left out.
        per_run = [
            statistics.median(r["phases"][key][1:] or r["phases"][key])
            for r in runs
            if key in r["phases"]
        ]
        if not per_run:
            continue
        seconds = statistics.median(per_run)
        out[f"{phase}_seconds"] = seconds
        out[f"{phase}_gflops"] = flops[phase] / seconds / 1e9
        out[phase] = flops[phase] / seconds / 1e9 / peak_gflops
    return out


def growth(g: dict, files: dict, work: Path, threads: int | None) -> list[dict]:
    """Our episodes/s and peak RSS as the batch and the response length double (in turn,
    ``g["doublings"]`` times each: 2 by default, ×1 ×2 ×4)."""
    rows = []
    b, r, n = g["batch"], g["response"], g.get("doublings", 2)
    grid = (
        [(b, r)]
        + [(b * 2**i, r) for i in range(1, n + 1)]
        + [(b, r * 2**i) for i in range(1, n + 1)]
    )
    for batch, response in grid:
        p = {"batch": batch, "response": response, "episodes": batch * g["updates"]}
        spec = ppo_spec(g["model"], p, files, work, threads)
        r = run_job("ppo", "ours", spec, work, f"growth-{g['model']}-{batch}-{response}")
        rows.append({"model": g["model"], "policy_params": _world.count_params(Path(spec["policy"]))["total"],
                     "updates": g["updates"], "batch": batch, "response_length": response,
                     "episodes_per_s": r["episodes_per_s"],
                     "peak_rss_mb": r["peak_rss_mb"], "rss_start_mb": r["rss_start_mb"]})  # fmt: skip
        log(f"  growth {g['model']} batch {batch} response {response}: {r['episodes_per_s']:.1f} episodes/s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MiB")  # fmt: skip
    return rows


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


# ------------------------------------------------------------------------------ report


def render_markdown(res: dict, argv: list[str]) -> str:
    from _report import render

    return render(res, argv)


if __name__ == "__main__":
    sys.exit(main())
