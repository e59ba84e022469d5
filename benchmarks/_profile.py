"""Where the seconds of our PPO update go.

Runs :class:`rlhfkit.ppo.PPOTrainer` with timers wrapped around its phases (the trainer's own
methods, wrapped from the outside; nothing in rlhfkit is changed), ``gc.callbacks`` for garbage
collection, and ``torch.profiler`` to split the time spent inside torch operators (C++ kernels)
from the time spent outside them (Python: the trainer, Hugging Face module code, dispatch).
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import torch
from _machine import GcTimer


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.in_train = False

    def wrap(self, obj, name: str, label: str | None = None, train_label: str | None = None):
        """Replace ``obj.name`` with a timed version (skipped if the attribute does not exist)."""
        fn = getattr(obj, name, None)
        if fn is None:
            return

        def timed(*args, **kwargs):
            key = train_label if (train_label and self.in_train) else label
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - t0
                self.calls[key] += 1

        setattr(obj, name, timed)


def profile_ours(spec: dict) -> dict:
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    from torch.profiler import ProfilerActivity, profile
    from transformers.utils import logging as hf_logging

    from rlhfkit.ppo import PPOConfig, PPOTrainer

    hf_logging.set_verbosity_error()
    cfg = PPOConfig(
        policy=spec["policy"],
        prompts=spec["prompts"],
        out=str(Path(spec["out_dir"]) / f"profile-{spec['name']}"),
        reward_model=spec["reward_model"],
        total_episodes=spec["total_episodes"],
        batch_size=spec["batch_size"],
        num_mini_batches=spec["num_mini_batches"],
        ppo_epochs=spec["ppo_epochs"],
        response_length=spec["response_length"],
        temperature=spec["temperature"],
        kl_coef=spec["kl_coef"],
        learning_rate=spec["learning_rate"],
        adam_eps=1e-5,
        max_grad_norm=0.0,
        critic="reward-model",
        seed=spec["seed"],
        sample_every=0,
        progress=False,
    )
    trainer = PPOTrainer(cfg)
    if spec.get("fused_adamw"):
        # The experiment behind a proposed change: the same AdamW with torch's fused kernel
        # (one kernel over all parameters instead of a Python loop of ~10 ops per tensor).
        for group in trainer.optimizer.param_groups:
            group["fused"], group["foreach"] = True, False
    clock = _Clock()
    clock.wrap(trainer, "_sample", "generation")
    clock.wrap(trainer, "_score", "reward model (decode, tokenize, forward)")
    clock.wrap(trainer, "_ref_logits", "reference forward")
    clock.wrap(trainer, "_rollout_forward", "rollout forwards (policy+reference+critic)")
    clock.wrap(trainer.accelerator, "backward", "train backward")
    clock.wrap(trainer.accelerator, "clip_grad_norm_", "grad norm")
    clock.wrap(trainer.optimizer, "step", "optimizer step")
    clock.wrap(trainer.model, "forward", "rollout policy+critic forward", "train forward")
    ppo_epochs = getattr(trainer, "_ppo_epochs", None)
    if ppo_epochs is not None:

        def in_train(*args, **kwargs):
            clock.in_train = True
            t0 = time.perf_counter()
            try:
                return ppo_epochs(*args, **kwargs)
            finally:
                clock.in_train = False
                clock.seconds["PPO epochs (total)"] += time.perf_counter() - t0

        trainer._ppo_epochs = in_train

    with GcTimer() as gct, profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    op_self = sum(e.self_cpu_time_total for e in events) / 1e6  # µs -> s
    n_ops = sum(e.count for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {
        "name": spec["name"],
        "wall_seconds": wall,
        "updates": spec["total_episodes"] // spec["batch_size"],
        "phases": dict(clock.seconds),
        "calls": dict(clock.calls),
        "gc_seconds": gct.seconds,
        "gc_collections": gct.collections,
        "torch_op_seconds": op_self,
        "outside_ops_seconds": wall - op_self,
        "torch_op_calls": n_ops,
        "top_ops": [
            {"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in top
        ],
    }
