"""Where the seconds of a PPO update go, ours and TRL's.

Runs :class:`rlhfkit.ppo.PPOTrainer` (or TRL's, :func:`profile_trl`) with timers wrapped around its phases (the trainer's own
methods, wrapped from the outside; nothing in rlhfkit is changed), ``gc.callbacks`` for garbage
collection, and ``torch.profiler`` to split the time spent inside torch operators (C++ kernels)
from the time spent outside them (Python: the trainer, Hugging Face module code, dispatch).
"""

from __future__ import annotations

import dataclasses
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

    def timed(self, fn, label: str | None, train_label: str | None = None):
        """``fn``, timed under ``label`` (``train_label`` while in the PPO epochs, if given)."""

        def timed(*args, **kwargs):
            key = train_label if (train_label and self.in_train) else label
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - t0
                self.calls[key] += 1

        return timed

    def wrap(self, obj, name: str, label: str | None = None, train_label: str | None = None):
        """Replace ``obj.name`` with a timed version (skipped if the attribute does not exist)."""
        fn = getattr(obj, name, None)
        if fn is None:
            return
        try:
            setattr(obj, name, self.timed(fn, label, train_label))
        except dataclasses.FrozenInstanceError:  # the rollout sampler
            object.__setattr__(obj, name, self.timed(fn, label, train_label))

    def wrap_factory(self, obj, name: str, label: str) -> None:
        """Replace the function factory ``obj.name`` with one whose functions are timed (the
        trainer builds its reference forward per rollout: ``reference_logits(ref, policy)``)."""
        factory = getattr(obj, name, None)
        if factory is not None:
            setattr(obj, name, lambda *a, **k: self.timed(factory(*a, **k), label))


def profile_ours(spec: dict) -> dict:
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    from transformers.utils import logging as hf_logging

    from rlhfkit.ppo import PPOConfig, PPOTrainer
    from rlhfkit.ppo import trainer as trainer_module

    hf_logging.set_verbosity_error()
    cfg = PPOConfig(
        policy=spec["policy"],
        prompts=spec["prompts"],
        out=str(Path(spec["out_dir"]) / f"profile-{spec['name']}"),
        reward_model=spec["reward_model"],
        total_episodes=spec["total_episodes"],
        batch_size=spec["batch_size"],
        num_mini_batches=spec["num_mini_batches"],
        num_ppo_epochs=spec["ppo_epochs"],
        response_length=spec["response_length"],
        temperature=spec["temperature"],
        kl_coef=spec["kl_coef"],
        learning_rate=spec["learning_rate"],
        adam_epsilon=1e-5,
        max_grad_norm=0.0,
        critic="reward-model",
        seed=spec["seed"],
        sample_every=0,
        progress=False,
        overwrite=True,  # --reuse keeps the work dir, and so the previous profile run
    )
    trainer = PPOTrainer(cfg)
    clock = _Clock()
    clock.wrap(trainer.rollouts, "sample", "generation")
    clock.wrap(trainer, "_score", "reward model (decode, tokenize, forward)")
    clock.wrap_factory(trainer_module, "reference_logits", "reference forward")
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

    return _run_profiled(spec, trainer.train, clock)


def profile_trl(spec: dict) -> dict:
    """The same measurement for TRL's PPO trainer: its module-level helpers (``batch_generation``,
    ``forward``, ``get_reward``) and its accelerator / optimizer methods are wrapped from outside."""
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    from _ppo import build_trl
    from transformers.utils import logging as hf_logging
    from trl.experimental.ppo import ppo_trainer as mod

    hf_logging.set_verbosity_error()
    trainer, _tok = build_trl(spec, Path(spec["out_dir"]) / f"profile-trl-{spec['name']}")
    clock = _Clock()
    clock.wrap(mod, "batch_generation", "generation (logits of every step kept)")
    # forward(): the reference forward in the rollout (no grad), policy + critic in the PPO epochs.
    clock.wrap(mod, "forward", "reference forward", "train forward")
    reward_model = trainer.reward_model

    get_reward = mod.get_reward

    def labelled_get_reward(model, *args, **kwargs):
        key = "reward model forward" if model is reward_model else "rollout critic forward"
        t0 = time.perf_counter()
        try:
            return get_reward(model, *args, **kwargs)
        finally:
            clock.seconds[key] += time.perf_counter() - t0
            clock.calls[key] += 1

    mod.get_reward = labelled_get_reward
    clock.wrap(trainer.accelerator, "backward", "train backward")
    clock.wrap(trainer.optimizer, "step", "optimizer step")
    clock.wrap(mod.gc, "collect", "gc.collect() called explicitly")

    def train():
        # TRL's PPO epochs are not a method of their own: forward() with grad enabled is training.
        fwd = mod.forward

        def forward(*args, **kwargs):
            clock.in_train = torch.is_grad_enabled()
            return fwd(*args, **kwargs)

        mod.forward = forward
        try:
            trainer.train()
        finally:
            mod.forward = fwd

    return _run_profiled(spec, train, clock)


def _run_profiled(spec: dict, train, clock: _Clock) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with GcTimer() as gct, profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        train()
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
