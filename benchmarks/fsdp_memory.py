"""Peak memory per process of ``--fsdp`` against DDP, on 2 CPU processes, and ``rlhfkit plan``'s
prediction of it.

Builds a random-weight Llama-shaped model of ~50M parameters (hidden 576, 9 layers, 9 heads
sharing 3 key/value heads, MLP 1536, a 32,000-row tied embedding; rlhfkit.tiny), then runs under
``torchrun --nproc_per_node 2``, each process recording its own peak RSS (VmHWM):

- ``train-rm`` for a few steps, DDP then ``--fsdp``;
- ``ppo`` for a few updates with that reward model (policy, reference, reward model, a value head
  on the reward model's trunk and one on the policy's), DDP then ``--fsdp``;
- the baseline: a process that only imports torch, transformers, accelerate, peft and joins the
  process group (what ``rlhfkit plan --runtime-gb`` stands for).

Then it prints each run's peak per process, the FSDP/DDP ratio, and ``rlhfkit plan``'s prediction
for the same settings (with the measured baseline as its runtime term) and measured/predicted.

    python benchmarks/fsdp_memory.py [--json out.json] [--work-dir DIR] [--small]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info

HERE = Path(__file__).parent
SIZE = dict(hidden_size=576, num_layers=9, num_heads=9, num_kv_heads=3, intermediate_size=1536,
            vocab_size=32000, max_positions=512)  # fmt: skip
SMALL = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
             vocab_size=1024, max_positions=256)  # fmt: skip
# glibc serves allocations below its mmap threshold from the heap, and raises that threshold (up to
# 32 MiB) each time a larger mmapped block is freed; freed heap memory mostly stays in the process.
# Loading a model whole and sharding it frees hundreds of MiB of such blocks, which then count in
# RSS for the rest of the run (PPO --fsdp: 2308-2336 MiB peak with glibc's defaults, 1305 MiB with a
# fixed threshold, measured here). A fixed threshold makes RSS measure what the run holds.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}
WORDS = ["light", "water", "energy", "plants", "sun", "leaves", "sugar", "air", "roots", "grow", "green", "cells", "food", "make", "use", "simple", "think", "like", "kitchen", "recipe", "factory"]  # fmt: skip


def build(work: Path, size: dict) -> dict:
    """The model, a prompts file and a rankings file (2 responses of 40-60 words per prompt)."""
    from rlhfkit.tiny import build_tiny_model
    from rlhfkit.world.content import PROMPT_TEMPLATE, TRAIN_TOPICS

    model = work / "llama"
    if not (model / "config.json").is_file():
        build_tiny_model("llama", model, **size)
    prompts = [PROMPT_TEMPLATE.format(topic=t) for t in TRAIN_TOPICS]
    rng = random.Random(0)
    (work / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8"
    )
    with open(work / "rankings.jsonl", "w", encoding="utf-8") as f:
        for i in range(32):
            texts = [" ".join(rng.choices(WORDS, k=rng.randint(40, 60))) for _ in range(2)]
            f.write(json.dumps({"prompt": prompts[i % len(prompts)], "chosen": texts[0],
                                "rejected": texts[1]}) + "\n")  # fmt: skip
    return {"model": model, "prompts": work / "prompts.jsonl", "rankings": work / "rankings.jsonl",
            "prompt_texts": prompts}  # fmt: skip


def torchrun(record: Path, *args: str) -> dict:
    """``torchrun --nproc_per_node 2 _rss_probe.py RECORD ARGS``: each process's peak RSS (MiB)."""
    record.unlink(missing_ok=True)
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
           str(HERE / "_rss_probe.py"), str(record), *args]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **MALLOC}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in record.read_text(encoding="utf-8").splitlines()]
    peaks = [r["peak_rss_mb"] for r in sorted(rows, key=lambda r: r["rank"])]
    return {"peak_rss_mb": peaks, "max_mb": max(peaks), "wall_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def predicted_mb(stage: str, fsdp: bool, model: Path, runtime_mb: float, **kw) -> float:
    """``rlhfkit plan``'s peak for the run (the same computation as the command)."""
    from rlhfkit.runtime.plan import PlanInput, plan_memory, read_shape

    head = "score" if stage == "train-rm" else "lm"
    policy = read_shape(str(model), "--model", head=head)
    rm = read_shape(str(model), "--reward-model", head="score")
    inp = PlanInput(
        policy=policy, reward_model=rm, processes=2, fsdp=fsdp, stage=stage,
        runtime_bytes=int(runtime_mb * 2**20), device="cpu", **kw,
    )  # fmt: skip
    plan = plan_memory(inp)
    return plan.peak / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path)
    p.add_argument("--work-dir", type=Path)
    p.add_argument("--small", action="store_true", help="a tiny Llama instead (for the test)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument(
        "--glibc-defaults",
        action="store_true",
        help="measure with glibc's dynamic mmap threshold (RSS keeps freed memory)",
    )
    args = p.parse_args()
    if args.glibc_defaults:
        MALLOC.clear()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="rlhfkit-fsdp-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    data = build(work, SMALL if args.small else SIZE)

    from transformers import AutoTokenizer

    from rlhfkit.runtime.plan import read_shape

    n_params = read_shape(str(data["model"]), "--model").params
    tok = AutoTokenizer.from_pretrained(data["model"])
    prompt_tokens = max(len(tok(t)["input_ids"]) for t in data["prompt_texts"])
    rm_tokens = max(
        len(tok(r["prompt"] + " " + r["chosen"])["input_ids"])
        for r in map(json.loads, data["rankings"].read_text(encoding="utf-8").splitlines())
    )
    results: dict = {"machine_before": machine_info(), "parameters": n_params, "malloc": dict(MALLOC),
                     "runs": []}  # fmt: skip
    print(f"model: {n_params / 1e6:.1f}M parameters (Llama-shaped, random weights), 2 processes")

    base = torchrun(work / "baseline.jsonl", "--baseline")
    runtime_mb = base["max_mb"]
    results["baseline"] = base
    print(f"  baseline (torch + transformers + process group): {base['peak_rss_mb']} MiB")

    b, r = args.batch_size, args.response_length
    rm_dir = work / "rm-ddp"
    for stage in ("train-rm", "ppo"):
        for fsdp in (False, True):
            mode = "fsdp" if fsdp else "ddp"
            out = work / f"{'rm' if stage == 'train-rm' else 'ppo'}-{mode}"
            if stage == "train-rm":
                cmd = ["train-rm", "--model", str(data["model"]), "--data", str(data["rankings"]),
                       "--out", str(out), "--overwrite", "--batch-size", str(b), "--eval-split", "0",
                       "--no-progress"]  # fmt: skip
                plan_kw = dict(batch_size=b, prompt_length=rm_tokens, response_length=0)
            else:
                cmd = ["ppo", "--policy", str(data["model"]), "--reward-model", str(rm_dir),
                       "--prompts", str(data["prompts"]), "--out", str(out), "--overwrite",
                       "--total-episodes", str(2 * b), "--batch-size", str(b),
                       "--response-length", str(r), "--sample-every", "0", "--no-progress"]  # fmt: skip
                plan_kw = dict(batch_size=b, prompt_length=prompt_tokens, response_length=r)
            m = torchrun(work / f"{out.name}.jsonl", *cmd, *(["--fsdp"] if fsdp else []))
            pred = predicted_mb(stage, fsdp, data["model"], runtime_mb, **plan_kw)
            row = {"stage": stage, "mode": mode, **m, "predicted_mb": round(pred, 1),
                   "measured_over_predicted": round(m["max_mb"] / pred, 3)}  # fmt: skip
            results["runs"].append(row)
            print(f"  {stage:>8} {mode:>4}: peak RSS per process {m['peak_rss_mb']} MiB; "
                  f"plan predicts {pred:.0f} MiB (measured/predicted {row['measured_over_predicted']}); "
                  f"wall {m['wall_seconds']} s")  # fmt: skip
    for stage in ("train-rm", "ppo"):
        ddp, fsdp = (x["max_mb"] for x in results["runs"] if x["stage"] == stage)
        above = lambda mb: mb - runtime_mb  # noqa: E731  (what the models, optimizer, activations take)
        results[f"{stage}_fsdp_over_ddp"] = round(fsdp / ddp, 3)
        results[f"{stage}_fsdp_over_ddp_above_baseline"] = round(above(fsdp) / above(ddp), 3)
        print(f"  {stage}: FSDP/DDP peak {fsdp / ddp:.2f} "
              f"({above(fsdp) / above(ddp):.2f} of what is above the baseline)")  # fmt: skip
    results["machine_after"] = machine_info()
    print(f"  machine: {results['machine_after']['cpu']}, {results['machine_after']['cores']} cores, "
          f"load {results['machine_before']['load_average']} before, "
          f"{results['machine_after']['load_average']} after")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
