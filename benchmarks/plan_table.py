"""docs/scaling.md's prediction table: ``rlhfkit plan`` for Qwen2.5-0.5B, Llama-2-7B and Llama-3-70B
(their config files in benchmarks/configs/, no weights needed) on 1, 8 and 64 GPUs, PPO in bf16
with --fsdp, full fine-tuning and LoRA r=16, 8 rollouts per GPU of 256 prompt + 256 new tokens.

    python benchmarks/plan_table.py [--runtime-gb 1.0]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"
MODELS = [("Qwen2.5-0.5B", "qwen2.5-0.5b.json"), ("Llama-2-7B", "llama-2-7b.json"),
          ("Llama-3-70B", "llama-3-70b.json")]  # fmt: skip


def main() -> None:
    from rlhfkit.runtime.plan import GiB, PlanInput, plan_memory, read_shape

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime-gb", type=float, default=1.0, help="CUDA context + framework per GPU")
    p.add_argument("--per-gpu-batch", type=int, default=8)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    print(
        "| model | GPUs | full fine-tuning: load / rollout / train (GiB) | LoRA r=16: load / rollout / train (GiB) |"
    )
    print("| --- | --- | --- | --- |")
    for label, file in MODELS:
        name = str(CONFIGS / file)
        rm = read_shape(name, "--reward-model", head="score")
        shapes = {0: read_shape(name, "--model"), 16: read_shape(name, "--model", lora_r=16)}
        for gpus in (1, 8, 64):
            cells = []
            for r in (0, 16):
                plan = plan_memory(PlanInput(
                    policy=shapes[r], reward_model=rm, processes=gpus, fsdp=gpus > 1,
                    batch_size=args.per_gpu_batch * gpus, prompt_length=256, response_length=256,
                    dtype="bfloat16", runtime_bytes=int(args.runtime_gb * GiB),
                ))  # fmt: skip
                m = plan.moments
                cells.append(" / ".join(f"{m[k] / GiB:,.1f}" for k in ("load", "rollout", "train")))
            print(
                f"| {label} ({shapes[0].params / 1e9:.2f} B) | {gpus} | {cells[0]} | {cells[1]} |"
            )


if __name__ == "__main__":
    main()
