"""``PPOTrainer``: the PPO loop of RLHF, in numbered steps (docs/ppo.md maps each implementation
detail of lm-human-preferences to the line that does it).

1. take a batch of prompts          5. GAE and whitened advantages
2. generate responses               6. PPO epochs over shuffled minibatches
3. score them                       7. update the KL controller
4. logprobs, values, KL, rewards    8. log, sample, check for hacking, checkpoint

The formulas are in :mod:`rlhfkit.losses`; buffers of the batch are named ``b_*`` (CleanRL). What
the trainer calls lives next to it: ``setup`` (models, optimizer, KL controller), ``rewards``,
``rollout`` (sampling), ``update`` (step 6), ``metrics`` (what is logged), ``monitoring``, and
``checkpointing`` / ``state`` (checkpoints, resume, the saved policy).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlhfkit.cards import publish_policy
from rlhfkit.chat import Prompt, as_text
from rlhfkit.data.prompts import read_prompt_inputs
from rlhfkit.hacking.overoptimization import LiveGaoFit
from rlhfkit.loading import check_model_source
from rlhfkit.losses import gae, kl_estimate, per_token_rewards
from rlhfkit.ppo.checkpointing import Checkpointing
from rlhfkit.ppo.config import RUN_DIR_ENTRIES, PPOConfig, batch_sizes
from rlhfkit.ppo.critic import ActorCritic
from rlhfkit.ppo.metrics import Stopwatch, update_metrics, write_samples
from rlhfkit.ppo.monitoring import LiveMonitor, check_for_hacking, record_hacking_stop
from rlhfkit.ppo.rewards import RewardFn, build_reward_sources
from rlhfkit.ppo.rollout import (
    Rollout,
    RolloutForward,
    RolloutSampler,
    reference_logits,
    rollout_forward,
)
from rlhfkit.ppo.setup import build_kl_controller, build_optimizer, build_policy, fsdp_sharder
from rlhfkit.ppo.state import (
    PromptSampler,
    start_run_files,
)
from rlhfkit.ppo.update import Batch, normalize_returns, ppo_epochs, whiten_across
from rlhfkit.runtime.checkpoint import TrainingStopped
from rlhfkit.runtime.distributed import make_accelerator
from rlhfkit.runtime.faults import inject_nan, kill_point
from rlhfkit.runtime.fsdp import gathered, launched_with_fsdp
from rlhfkit.runtime.io import MetricsLogger, clear_previous_run
from rlhfkit.runtime.progress import progress_bar
from rlhfkit.runtime.trackers import start_trackers, tracker_kwargs


class PPOTrainer(Checkpointing):
    """Holds the models, optimizer and state of one PPO run; ``train()`` runs it.

    ``reward_fn`` / ``reward_model`` / ``gold_reward_fn`` may be given as Python objects instead of
    paths in the config (a callable ``fn(prompts, responses) -> list[float]``, a ``RewardModel``).
    ``hacking_monitor`` replaces ``rlhfkit.hacking.HackingMonitor`` (same constructor).
    """

    def __init__(
        self,
        config: PPOConfig,
        *,
        reward_fn: RewardFn | None = None,
        reward_model: Any | None = None,
        gold_reward_fn: RewardFn | None = None,
        hacking_monitor: Callable[..., Any] | None = None,
    ):
        from accelerate.utils import set_seed
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if launched_with_fsdp() and not config.fsdp:  # an Accelerate FSDP config means --fsdp
            config = dataclasses.replace(config, fsdp=True)
        self.config = cfg = config
        self.out = Path(cfg.out)

        # 1. Fail on a model path that cannot work before anything is read, loaded or written.
        check_model_source(cfg.policy, "--policy")
        if cfg.reward_model is not None and reward_model is None:
            check_model_source(cfg.reward_model, "--reward-model", allow_ensemble=True)

        # 2. The processes and OUT. Refuse to mix two runs in one OUT (a later --resume would take
        #    the newest checkpoint, whichever run wrote it), before any model is loaded.
        tracking = tracker_kwargs(cfg.report_to, cfg.out, cfg.run_name)
        self.accelerator = acc = make_accelerator(**tracking)
        self.device, self.is_main = acc.device, acc.is_main_process
        clear_previous_run(
            self.out, RUN_DIR_ENTRIES,
            resume=cfg.resume, overwrite=cfg.overwrite, delete=acc.is_main_process,
        )  # fmt: skip
        acc.wait_for_everyone()
        self.local_batch, self.mini_batch, self.micro_batch = batch_sizes(cfg, acc.num_processes)
        shard_now = fsdp_sharder(cfg, acc)  # --fsdp: each model sharded as soon as it is loaded

        # 3. Prompts and reward sources (fail on bad input before loading the policy). A prompt
        #    is text or a conversation: the policy and a reward model each render it their own
        #    way (rlhfkit.chat); reward functions, samples and the hacking monitor read its text.
        self.prompt_inputs: list[Prompt] = read_prompt_inputs(cfg.prompts)
        self.prompts = [as_text(p) for p in self.prompt_inputs]
        self._input_of_text = dict(zip(self.prompts, self.prompt_inputs, strict=True))
        self.sampler = PromptSampler(len(self.prompts), cfg.seed)
        self.rewards = build_reward_sources(
            cfg, self.device, shard_now,
            reward_model=reward_model, reward_fn=reward_fn, gold_fn=gold_reward_fn,
        )  # fmt: skip

        # 4. Models: same seed on every process so value heads start identical.
        set_seed(cfg.seed)
        setup = build_policy(cfg, self.prompt_inputs, self.reward_model, self.device, shard_now)
        self.tokenizer, self.chat = setup.tokenizer, setup.chat
        self.stop_ids, self.pad_id = setup.stop_ids, setup.pad_id
        self.ref_model, self.critic_kind = setup.ref_model, setup.critic_kind
        self.critic_trunk = setup.critic_trunk
        self.rollouts = RolloutSampler.from_config(
            cfg, self.tokenizer, self.chat, self.pad_id, self.stop_ids, self.device
        )
        optimizer, self.scheduler = build_optimizer(cfg, setup.model, self.critic_kind)
        # The scheduler is stepped once per update by us (not prepared: Accelerate would step
        # it once per process). Sharded models are not prepared: Accelerate would wrap them in DDP.
        self.model, self.optimizer = (
            (setup.model, optimizer) if cfg.fsdp else acc.prepare(setup.model, optimizer)
        )

        # 5. β, the counters, the over-optimization fit, the hacking monitor (main process only).
        self.kl_ctl = build_kl_controller(cfg)
        self.gao = LiveGaoFit()
        self.step = self.episode = self.bad_in_a_row = self.nonfinite_total = 0
        self.last_good_checkpoint: str | None = None
        self.last_hacking_warning: str | None = None
        self.monitor = self._live_monitor(hacking_monitor)

        # 6. Resume; then a different sampling seed per process (the models are built identically).
        self._resumed_from: Path | None = None
        if cfg.resume:
            self._resume()
        if self._resumed_from is None:
            set_seed(cfg.seed, device_specific=True)

    @property
    def reward_model(self) -> Any | None:
        return self.rewards.reward_model

    def _live_monitor(self, factory: Callable[..., Any] | None) -> LiveMonitor | None:
        """The hacking monitor (``--hacking-check-every``), on the main process only."""
        cfg = self.config
        if cfg.hacking_check_every <= 0 or not self.is_main:
            return None
        return LiveMonitor(
            self.prompts[: cfg.hacking_num_prompts], self._sample_texts,
            reward_fn=self.rewards.as_reward_fn(self._input_of_text),
            gold_fn=self.rewards.gold_fn, factory=factory,
            disagreement_fn=self.rewards.disagreement_fn(self._input_of_text),
        )  # fmt: skip

    # ---------------------------------------------------------------------------- main loop

    def train(self) -> dict[str, Any]:
        """Run every update; returns ``{"stopped": None | "hacking", "step", "episode", ...}``."""
        cfg, acc = self.config, self.accelerator
        if self.is_main:  # the settings as given, and what they became for this policy
            start_run_files(self.out, {
                **dataclasses.asdict(cfg), "critic_resolved": self.critic_kind,
                "chat_template_resolved": self.chat, "stop_token_ids": self.stop_ids,
                "pad_token_id": self.pad_id,
            }, resumed=self._resumed_from is not None)  # fmt: skip
        logger = MetricsLogger(
            self.out / "metrics.jsonl", enabled=self.is_main, trackers=start_trackers(acc, cfg)
        )
        if self.monitor is not None and self.monitor.state is None:
            self.monitor.start()
        progress, task = progress_bar(
            "ppo", cfg.num_updates, self.step, enabled=self.is_main and cfg.progress
        )
        progress.start()
        stopped: str | None = None
        last_metrics: dict[str, Any] = {}
        try:
            while self.step < cfg.num_updates:
                metrics = self._one_update()
                # 8. log, sample, check for hacking, checkpoint
                t0 = time.perf_counter()
                checked = cfg.hacking_check_every > 0 and self.step % cfg.hacking_check_every == 0
                if checked:
                    found, self.last_hacking_warning, flagged = check_for_hacking(
                        self.monitor, self.step, acc
                    )
                    metrics.update(found)
                    stopped = "hacking" if flagged and cfg.stop_on_hacking else None
                metrics["time/hacking"] = time.perf_counter() - t0
                logger.log(metrics)
                last_metrics = metrics
                progress.update(
                    task, completed=self.step,
                    info=f"reward {metrics.get('objective/scores', float('nan')):.3f}  "
                         f"kl {metrics.get('objective/kl', float('nan')):.3f}",
                )  # fmt: skip
                if stopped:
                    break
                if self.bad_in_a_row >= cfg.max_bad_steps:
                    where = self.last_good_checkpoint or "none was saved (use --save-every)"
                    raise TrainingStopped(
                        f"{self.bad_in_a_row} updates in a row had a non-finite reward or loss "
                        f"(nothing was applied to the weights); stopping. Last good checkpoint: {where}"
                    )
                periodic = cfg.save_every > 0 and self.step % cfg.save_every == 0
                if (periodic or (checked and cfg.stop_on_hacking)) and self.bad_in_a_row == 0:
                    self.save_checkpoint()
                    kill_point("after-checkpoint", self.step)
        finally:
            logger.close()
            progress.stop()
        if stopped == "hacking":
            if self.is_main:
                record_hacking_stop(
                    self.out, self.step, self.last_good_checkpoint, self.last_hacking_warning
                )
        else:
            self.save_policy(self.out / "policy")
        acc.wait_for_everyone()
        if self.is_main and stopped is None:  # policy/README.md (and --push-to-hub)
            publish_policy(cfg, len(self.prompts), self.last_hacking_warning)
        return {"stopped": stopped, "step": self.step, "episode": self.episode, **last_metrics}

    def _one_update(self) -> dict[str, Any]:
        """Steps 1-7 on a fresh batch of prompts; returns the update's metrics."""
        cfg, acc = self.config, self.accelerator
        clock = Stopwatch()
        beta = self.kl_ctl.value
        unwrapped: ActorCritic = acc.unwrap_model(self.model)

        # 1. take a batch of prompts: the same global batch on every process, each takes its slice
        global_idx = self.sampler.next_batch(cfg.batch_size)
        first = acc.process_index * self.local_batch  # this process's first row of the batch
        prompts = [self.prompt_inputs[i] for i in global_idx[first : first + self.local_batch]]

        # 2. generate responses (KV cache, temperature sampling) and truncate after the stop token;
        #    a sharded policy is gathered once for the whole rollout, not once per token
        with clock.step("generate"), gathered(unwrapped.policy):
            roll = self.rollouts.sample_batch(unwrapped.policy, prompts, first, self.step + 1)

        # 3. score: reward model and/or reward function, missing-EOS penalty, optional clipping
        with clock.step("score"):
            scores, score_parts = self._score(prompts, roll)
        # A non-finite score on any process skips the whole update on every process.
        finite = torch.tensor(float(torch.isfinite(scores).all()), device=self.device)
        if acc.reduce(finite, "min").item() < 1:
            return self._skipped_update(clock, "a reward was NaN or infinite")

        with clock.step("forward"):
            # 4. logprobs of policy and reference on the sampled tokens (temperature applied),
            #    values, per-token KL and rewards r_t − β·KL_t
            mask = roll.response_mask  # (B, R)
            fwd = self._rollout_forward(unwrapped, roll)
            kl = kl_estimate(fwd.logprobs, fwd.ref_logprobs, cfg.kl_estimator) * mask  # (B, R)
            rewards, reward_stats = per_token_rewards(
                scores, kl, mask, beta, kl_in_reward=not cfg.kl_in_loss
            )  # (B, R)
            if cfg.whiten_rewards:
                rewards = whiten_across(rewards, mask, acc, shift_mean=False)

            # 5. GAE (γ, λ) and advantages whitened under the mask
            advantages, returns = gae(rewards, fwd.values, mask, cfg.gamma, cfg.lam)  # (B, R)
            batch = Batch(
                roll, scores, fwd.logprobs, fwd.ref_logprobs, fwd.values,
                whiten_across(advantages, mask, acc), returns, fwd.critic_hidden,
            )  # fmt: skip
            value_scale = normalize_returns(
                unwrapped.value_head, returns, mask, acc, cfg.value_norm
            )

        # 6. PPO epochs over shuffled minibatches
        with clock.step("update"):
            train_stats, skipped_steps = self._ppo_epochs(batch, beta, value_scale)
        lr = self.scheduler.get_last_lr()[0]
        self._advance_schedule()

        # 7. update the KL controller with this batch's mean KL per response
        metrics = update_metrics(
            batch, kl, reward_stats["non_score_reward"], score_parts, train_stats,
            unwrapped.value_head.return_std.detach().clone(), beta=beta,
            eos_token_id=self.tokenizer.eos_token_id, accelerator=acc,
        )  # fmt: skip
        self.kl_ctl.update(metrics["objective/kl"], cfg.batch_size)
        metrics.update(self._gao_fit(metrics))

        # Every process agrees on whether an optimizer step was skipped.
        skipped_steps = int(
            acc.reduce(torch.tensor(skipped_steps, device=self.device), "max").item()
        )
        self._count_update(bad=skipped_steps > 0)
        if cfg.sample_every > 0 and self.step % cfg.sample_every == 0 and self.is_main:
            write_samples(self.out / "samples.jsonl", self.step, roll, scores, kl, cfg.num_samples)
        return {
            "step": self.step, "episode": self.episode, "lr": lr, **metrics,
            "update/skipped_steps": skipped_steps, "update/skipped": 0,
            "update/nonfinite_total": self.nonfinite_total, **clock.finish(cfg.batch_size),
        }  # fmt: skip

    # ------------------------------------------------------------------------- the steps

    def _score(
        self, prompts: list[Prompt], roll: Rollout
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scores (B,) on the device, plus the separate parts for logging. (A NaN injected for
        the crash tests replaces the first score.)"""
        scores, parts = self.rewards.score(prompts, roll.texts, roll.has_stop)
        scores = scores.to(self.device)
        if inject_nan("reward", self.step + 1):
            scores = torch.where(
                torch.arange(len(scores), device=scores.device) == 0, float("nan"), scores
            )
        return scores, {k: v.to(self.device) for k, v in parts.items()}

    def _rollout_forward(self, unwrapped: ActorCritic, roll: Rollout) -> RolloutForward:
        return rollout_forward(
            unwrapped, reference_logits(self.ref_model, unwrapped.policy), self.critic_trunk, roll,
            self.config.temperature, self.config.forward_batch_size,
        )  # fmt: skip

    def _ppo_epochs(
        self, batch: Batch, beta: float, value_scale: float
    ) -> tuple[dict[str, torch.Tensor], int]:
        return ppo_epochs(
            self.model, self.optimizer, self.accelerator, batch, self.config, beta, value_scale,
            self.mini_batch, self.micro_batch, self.step + 1,
        )  # fmt: skip

    def _gao_fit(self, metrics: dict[str, Any]) -> dict[str, float]:
        """With a gold reward: Gao et al.'s fit of gold against KL through the run so far (and
        its warning when the gold reward turns down), else nothing."""
        if "objective/gold_scores" not in metrics:
            return {}
        fitted, warning = self.gao.add(metrics["objective/kl"], metrics["objective/gold_scores"])
        if warning is not None and self.is_main:
            warnings.warn(f"update {self.step + 1}: {warning}", stacklevel=3)
        return fitted

    def _count_update(self, bad: bool) -> None:
        """One more update done; ``bad``: it had a non-finite reward, loss or gradient."""
        self.step += 1
        self.episode += self.config.batch_size
        self.nonfinite_total += 1 if bad else 0
        self.bad_in_a_row = self.bad_in_a_row + 1 if bad else 0

    def _advance_schedule(self) -> None:
        """One update's step of the learning-rate schedule, whether or not an optimizer step
        happened in it (a skipped update still counts). torch warns when a schedule's first step
        comes before any optimizer step, which is what a run whose first update was skipped does;
        that warning, and only that one, is silenced here."""
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=r"Detected call of `lr_scheduler\.step\(\)` before",
                category=UserWarning,
            )
            self.scheduler.step()

    def _skipped_update(self, clock: Stopwatch, why: str) -> dict[str, Any]:
        """Nothing is trained on this batch: count it and move on (the LR schedule advances)."""
        warnings.warn(f"update {self.step + 1}: {why}; update skipped", stacklevel=2)
        self._advance_schedule()
        self._count_update(bad=True)
        return {
            "step": self.step, "episode": self.episode, "objective/kl_coef": self.kl_ctl.value,
            "update/skipped_steps": 0, "update/skipped": 1,
            "update/nonfinite_total": self.nonfinite_total, **clock.finish(),
        }  # fmt: skip

    # ------------------------------------------------------------------------- hacking monitor

    def _sample_texts(self, prompt_texts: list[str]) -> tuple[list[str], list[bool]]:
        """The current policy's answers to these prompts (same temperature and length)."""
        policy = self.accelerator.unwrap_model(self.model).policy
        prompts = [self._input_of_text[p] for p in prompt_texts]
        return self.rollouts.answers(policy, prompts, self.local_batch)
