"""Saving and resuming a PPO run: the tuned policy (``OUT/policy/``), checkpoints
(``OUT/checkpoints/step-N/``, written and read by :mod:`rlhfkit.ppo.state`) and ``--resume``. The
methods of :class:`~rlhfkit.ppo.PPOTrainer` that read and write what the trainer carries from one
update to the next."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from rlhfkit.hacking.overoptimization import LiveGaoFit
from rlhfkit.kl import AdaptiveKLController, FixedKLController
from rlhfkit.ppo.config import PPOConfig
from rlhfkit.ppo.monitoring import LiveMonitor
from rlhfkit.ppo.state import (
    PromptSampler,
    checkpoint_to_resume,
    restore_run_checkpoint,
    save_run_checkpoint,
    save_tuned_policy,
)
from rlhfkit.runtime.io import truncate_jsonl


class Checkpointing:
    """Mixed into ``PPOTrainer``, which sets these attributes in its ``__init__``."""

    config: PPOConfig
    out: Path
    accelerator: Any
    is_main: bool
    model: Any  # ActorCritic, prepared (DDP) or sharded
    optimizer: Any
    scheduler: Any
    tokenizer: Any
    critic_kind: str
    chat: bool
    sampler: PromptSampler
    kl_ctl: AdaptiveKLController | FixedKLController
    gao: LiveGaoFit
    monitor: LiveMonitor | None
    step: int
    episode: int
    bad_in_a_row: int
    nonfinite_total: int
    last_good_checkpoint: str | None
    _resumed_from: Path | None

    def save_policy(self, path: str | Path) -> None:
        """The tuned policy as a plain model (LoRA adapters merged) + tokenizer, atomically. A
        sharded policy is gathered onto the main process first."""
        save_tuned_policy(
            self.accelerator, self.model, self.tokenizer, path,
            lora=self.config.lora_r > 0, fsdp=self.config.fsdp,
        )  # fmt: skip

    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "episode": self.episode,
            "data": self.sampler.state_dict(),
            "kl_controller": {"kind": type(self.kl_ctl).__name__, **self.kl_ctl.state_dict()},
            "bad_in_a_row": self.bad_in_a_row,
            "nonfinite_total": self.nonfinite_total,
            "world_size": self.accelerator.num_processes,
            "monitor": self.monitor.state if self.monitor is not None else None,
            "gao": vars(self.gao),
            "config": self._settings_as_trained(),
        }

    def _settings_as_trained(self) -> dict[str, Any]:
        """The settings, with ``--critic`` and ``--chat-template`` as trained (``auto``
        resolved): what a checkpoint records, and what resuming compares."""
        return {
            **dataclasses.asdict(self.config), "critic": self.critic_kind, "chat_template": self.chat
        }  # fmt: skip

    def save_checkpoint(self) -> Path | None:
        """``OUT/checkpoints/step-N/`` with everything needed to resume."""
        path = save_run_checkpoint(
            self.accelerator, self.out, self.step, self.trainer_state(), self.model,
            self.tokenizer, self.optimizer, self.scheduler, self.config.save_total_limit,
        )  # fmt: skip
        if path is not None:
            self.last_good_checkpoint = str(path)
        return path

    def _resume(self) -> None:
        """Continue from the newest checkpoint in --out (refusing one made with different
        settings): weights, optimizer, RNG, data position, β, counters, monitor."""
        acc, cfg = self.accelerator, self.config
        found = checkpoint_to_resume(self.out, self._settings_as_trained(), acc.num_processes)
        if found is None:
            return
        path, ckpt = found
        state = ckpt.state
        restore_run_checkpoint(
            ckpt, acc, self.model, self.optimizer, self.scheduler, cfg.lora_r > 0,
            getattr(torch, cfg.dtype),
        )  # fmt: skip
        self.sampler.load_state_dict(state["data"])
        self.kl_ctl.load_state_dict(
            {k: v for k, v in state["kl_controller"].items() if k != "kind"}
        )
        self.step, self.episode = int(state["step"]), int(state["episode"])
        self.bad_in_a_row = int(state["bad_in_a_row"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.last_good_checkpoint = str(path)
        if state.get("gao"):
            vars(self.gao).update(state["gao"])
        if state.get("monitor") and self.monitor is not None:
            self.monitor.restore(state["monitor"])
        if self.is_main:
            # Lines logged after the checkpoint belong to updates that will be redone.
            for name in ("metrics.jsonl", "samples.jsonl"):
                truncate_jsonl(self.out / name, self.step)
        self._resumed_from = path
