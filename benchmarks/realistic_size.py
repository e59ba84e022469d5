"""What PPO costs on a model of a size people bring: a ~100M-parameter Llama-shaped policy.

Builds a random-weight Llama (hidden 768, 12 layers, 12 heads with 4 key/value heads, MLP 2048,
a 32,000-row tied embedding: 101M parameters) with a Llama-3-style tokenizer and chat template
(rlhfkit.tiny), then runs ``rlhfkit ppo`` on the demo world's prompts as conversations, once with
LoRA and once with full fine-tuning, each in its own process, and reports seconds per update and
the process's peak RSS. docs/scaling.md has the figures and what they predict for larger models.

    python benchmarks/realistic_size.py [--updates 2] [--batch-size 8] [--response-length 32]
                                        [--json out.json] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info

SIZE = dict(hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=4, intermediate_size=2048,
            vocab_size=32000, max_positions=2048)  # fmt: skip


def build(work: Path, size: dict) -> tuple[Path, Path, int]:
    """The model directory, a conversational prompts file, and the parameter count."""
    from rlhfkit.tiny import build_tiny_model
    from rlhfkit.world.content import PROMPT_TEMPLATE, TRAIN_TOPICS

    model = work / "llama-100m"
    if not (model / "config.json").is_file():
        build_tiny_model("llama", model, **size)
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "pt") as f:
        n_params = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (safe_open has no __iter__)
    prompts = work / "prompts.jsonl"
    with open(prompts, "w", encoding="utf-8") as f:
        for topic in TRAIN_TOPICS:
            msg = [{"role": "user", "content": PROMPT_TEMPLATE.format(topic=topic)}]
            f.write(json.dumps({"prompt": msg}) + "\n")
    return model, prompts, n_params


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def run(model: Path, prompts: Path, out: Path, args, lora_r: int) -> dict:
    """One ``rlhfkit ppo`` process: wall time, seconds per update, peak RSS (its own, from
    getrusage of the finished child)."""
    reward = Path(__file__).parent / "_length_reward.py"
    cmd = [
        sys.executable, "-m", "rlhfkit", "ppo", "--policy", str(model), "--prompts", str(prompts),
        "--reward-fn", f"{reward}:length", "--out", str(out), "--overwrite",
        "--total-episodes", str(args.updates * args.batch_size), "--batch-size", str(args.batch_size),
        "--response-length", str(args.response_length), "--lora-r", str(lora_r),
        "--critic", "head", "--no-progress", "--sample-every", "0",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"ppo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    per_update = [r["time/total"] for r in rows]
    return {
        "mode": f"LoRA r={lora_r}" if lora_r else "full fine-tuning",
        "wall_seconds": round(wall, 1),
        "seconds_per_update": [round(x, 2) for x in per_update],
        "generate_seconds": [round(r["time/generate"], 2) for r in rows],
        "update_seconds": [round(r["time/update"], 2) for r in rows],
        # ru_maxrss of children is the largest child so far: only meaningful when it grew
        "peak_rss_mb": round(peak_kb / 1024, 1) if peak_kb > before else None,
        "finite": all(r["loss/policy"] == r["loss/policy"] for r in rows),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--json", type=Path)
    p.add_argument("--work-dir", type=Path)
    p.add_argument("--small", action="store_true", help="a tiny Llama instead (for the test)")
    args = p.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="rlhfkit-size-"))
    work.mkdir(parents=True, exist_ok=True)
    size = dict(SIZE)
    if args.small:
        size.update(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                    vocab_size=1024)  # fmt: skip
    model, prompts, n_params = build(work, size)
    results = {"machine": machine_info(), "parameters": n_params, "size": size,
               "batch_size": args.batch_size, "response_length": args.response_length, "runs": []}  # fmt: skip
    print(f"policy: {n_params / 1e6:.1f}M parameters (Llama-shaped, random weights); "
          f"{args.updates} updates of {args.batch_size} rollouts × {args.response_length} tokens")  # fmt: skip
    for lora_r in (args.lora_r, 0):
        # The lower peak first: ru_maxrss of children only ever grows.
        r = run(model, prompts, work / f"run-lora{lora_r}", args, lora_r)
        results["runs"].append(r)
        print(f"  {r['mode']:>18}: {r['seconds_per_update']} s per update "
              f"(generate {r['generate_seconds']}, update {r['update_seconds']}), "
              f"peak RSS {r['peak_rss_mb']} MB, wall {r['wall_seconds']} s")  # fmt: skip
    print(f"  machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
          f"load {results['machine']['load_average']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
