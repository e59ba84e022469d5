"""``PPOTrainer``: the PPO loop of RLHF, in numbered steps (docs/ppo.md maps each implementation
detail of lm-human-preferences to the line that does it).

1. take a batch of prompts          5. GAE and whitened advantages
2. generate responses               6. PPO epochs over shuffled minibatches
3. score them                       7. update the KL controller
4. logprobs, values, KL, rewards    8. log, sample, check for hacking, checkpoint

The formulas are in :mod:`rlhfkit.losses`; buffers of the batch are named ``b_*`` (CleanRL).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlhfkit.chat import Prompt, as_text
from rlhfkit.data.prompts import read_prompt_inputs
from rlhfkit.errors import ConfigError
from rlhfkit.hacking.overoptimization import LiveGaoFit
from rlhfkit.kl import AdaptiveKLController, FixedKLController
from rlhfkit.loading import check_model_source, fuse_activations
from rlhfkit.losses import gae, kl_estimate, per_token_rewards
from rlhfkit.ops import explained_variance, masked_whiten
from rlhfkit.ppo.config import RUN_DIR_ENTRIES, PPOConfig
from rlhfkit.ppo.critic import ActorCritic
from rlhfkit.ppo.monitoring import LiveMonitor
from rlhfkit.ppo.rewards import RewardFn, RewardSources, load_reward_fn
from rlhfkit.ppo.rollout import Rollout, RolloutForward, rollout_forward, sample_rollout
from rlhfkit.ppo.setup import build_optimizer, build_policy
from rlhfkit.ppo.state import (
    PromptSampler,
    restore_run_checkpoint,
    resume_mismatches,
    save_run_checkpoint,
)
from rlhfkit.ppo.update import Batch, normalize_returns, ppo_epochs
from rlhfkit.runtime.checkpoint import TrainingStopped, latest_checkpoint, load_checkpoint
from rlhfkit.runtime.distributed import make_accelerator
from rlhfkit.runtime.faults import inject_nan, kill_point
from rlhfkit.runtime.io import (
    MetricsLogger,
    atomic_dir,
    clear_previous_run,
    truncate_jsonl,
    write_json,
)
from rlhfkit.runtime.progress import progress_bar


class PPOTrainer:
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
        self.config = cfg = config
        self.out = Path(cfg.out)
        # Fail on a model path that cannot work before anything is read, loaded or written.
        check_model_source(cfg.policy, "--policy")
        if cfg.reward_model is not None and reward_model is None:
            check_model_source(cfg.reward_model, "--reward-model", allow_ensemble=True)
        self.accelerator = acc = make_accelerator()
        self.device = acc.device
        # Refuse to mix two runs in one OUT (a later --resume would take the newest checkpoint,
        # whichever run wrote it), before any model is loaded.
        clear_previous_run(
            self.out, RUN_DIR_ENTRIES,
            resume=cfg.resume, overwrite=cfg.overwrite, delete=acc.is_main_process,
        )  # fmt: skip
        acc.wait_for_everyone()
        self.is_main = acc.is_main_process
        self.local_batch, self.mini_batch, self.micro_batch = _batch_sizes(cfg, acc.num_processes)

        # Prompts and reward sources (fail on bad input before loading any model). A prompt is
        # text or a conversation: the policy and a reward model each render it their own way
        # (rlhfkit.chat); reward functions, samples and the hacking monitor read its text.
        self.prompt_inputs: list[Prompt] = read_prompt_inputs(cfg.prompts)
        self.prompts = [as_text(p) for p in self.prompt_inputs]
        self._input_of_text = dict(zip(self.prompts, self.prompt_inputs, strict=True))
        self.sampler = PromptSampler(len(self.prompts), cfg.seed)
        if reward_model is None and cfg.reward_model is not None:
            from rlhfkit.reward.ensemble import load_reward

            # a reward model, or an ensemble of them (train-rm --ensemble)
            reward_model = load_reward(
                cfg.reward_model, cfg.ensemble_objective, cfg.uwo_lambda, "--reward-model"
            )
            for member in getattr(reward_model, "members", [reward_model]):
                fuse_activations(member.model)  # ours: same function, one kernel
        if reward_model is not None:
            reward_model.to(self.device)
        self.rewards = RewardSources(
            reward_model=reward_model,
            reward_fn=reward_fn or (load_reward_fn(cfg.reward_fn) if cfg.reward_fn else None),
            gold_fn=gold_reward_fn
            or (load_reward_fn(cfg.gold_reward_fn) if cfg.gold_reward_fn else None),
            reward_clip=cfg.reward_clip,
            missing_eos_penalty=cfg.missing_eos_penalty,
        )
        if reward_model is None and self.rewards.reward_fn is None:
            raise ConfigError("give --reward-model and/or --reward-fn")

        # Models: same seed on every process so value heads start identical.
        set_seed(cfg.seed)
        setup = build_policy(cfg, self.prompt_inputs, reward_model, self.device)
        self.tokenizer, self.chat = setup.tokenizer, setup.chat
        self.stop_ids, self.pad_id = setup.stop_ids, setup.pad_id
        self.ref_model, self.critic_kind = setup.ref_model, setup.critic_kind
        self.critic_trunk = setup.critic_trunk
        optimizer, self.scheduler = build_optimizer(cfg, setup.model, self.critic_kind)
        # The scheduler is stepped once per update by us (not prepared: Accelerate would step
        # it once per process).
        self.model, self.optimizer = acc.prepare(setup.model, optimizer)

        self.kl_ctl = (
            AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if cfg.kl_target is not None
            else FixedKLController(cfg.kl_coef)
        )
        self.gao = LiveGaoFit()
        self.step = self.episode = 0
        self.bad_in_a_row = self.nonfinite_total = 0
        self.last_good_checkpoint: str | None = None
        self.last_hacking_warning: str | None = None
        self.monitor: LiveMonitor | None = None
        if cfg.hacking_check_every > 0 and self.is_main:
            self.monitor = LiveMonitor(
                self.prompts[: cfg.hacking_num_prompts], self._sample_texts,
                reward_fn=self.rewards.as_reward_fn(self._input_of_text),
                gold_fn=self.rewards.gold_fn, factory=hacking_monitor,
                disagreement_fn=self.rewards.disagreement_fn(self._input_of_text),
            )  # fmt: skip

        self._resumed_from: Path | None = None
        if cfg.resume:
            self._resume()
        # Different sampling seed per process (after the models are built identically).
        if self._resumed_from is None:
            set_seed(cfg.seed, device_specific=True)

    @property
    def reward_model(self) -> Any | None:
        return self.rewards.reward_model

    # ---------------------------------------------------------------------------- main loop

    def train(self) -> dict[str, Any]:
        """Run every update; returns ``{"stopped": None | "hacking", "step", "episode", ...}``."""
        cfg, acc = self.config, self.accelerator
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            # The settings as given, and what they became for this policy.
            write_json(
                self.out / "config.json",
                {**dataclasses.asdict(cfg), "critic_resolved": self.critic_kind,
                 "chat_template_resolved": self.chat, "stop_token_ids": self.stop_ids,
                 "pad_token_id": self.pad_id},
            )  # fmt: skip
            if self._resumed_from is None:
                # A fresh run into a used directory starts its own logs (they are appended to).
                for name in ("metrics.jsonl", "samples.jsonl"):
                    (self.out / name).unlink(missing_ok=True)
        logger = MetricsLogger(self.out / "metrics.jsonl", enabled=self.is_main)
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
                if checked and self._check_hacking(metrics) and cfg.stop_on_hacking:
                    stopped = "hacking"
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
            self._record_stop()
        else:
            self.save_policy(self.out / "policy")
        acc.wait_for_everyone()
        return {"stopped": stopped, "step": self.step, "episode": self.episode, **last_metrics}

    def _one_update(self) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        times: dict[str, float] = {}
        t_start = time.perf_counter()
        beta = self.kl_ctl.value
        unwrapped: ActorCritic = acc.unwrap_model(self.model)

        # 1. take a batch of prompts: the same global batch on every process, each takes its slice
        global_idx = self.sampler.next_batch(cfg.batch_size)
        rank = acc.process_index
        local_idx = global_idx[rank * self.local_batch : (rank + 1) * self.local_batch]
        prompts = [self.prompt_inputs[i] for i in local_idx]

        # 2. generate responses (KV cache, temperature sampling) and truncate after the stop token
        t0 = time.perf_counter()
        roll = self._sample(unwrapped.policy, prompts)
        times["time/generate"] = time.perf_counter() - t0

        # 3. score: reward model and/or reward function, missing-EOS penalty, optional clipping
        t0 = time.perf_counter()
        scores, score_parts = self._score(prompts, roll.texts, roll.has_stop)
        if inject_nan("reward", self.step + 1):
            scores = torch.where(
                torch.arange(len(scores), device=scores.device) == 0, float("nan"), scores
            )
        times["time/score"] = time.perf_counter() - t0
        # A non-finite score on any process skips the whole update on every process.
        finite = torch.tensor(float(torch.isfinite(scores).all()), device=self.device)
        if acc.reduce(finite, "min").item() < 1:
            return self._skipped_update(times, t_start, "a reward was NaN or infinite")

        # 4. logprobs of policy and reference on the sampled tokens (temperature applied), values,
        #    per-token KL and rewards r_t − β·KL_t
        t0 = time.perf_counter()
        mask = roll.response_mask  # (B, R)
        fwd = self._rollout_forward(unwrapped, roll)
        kl = kl_estimate(fwd.logprobs, fwd.ref_logprobs, cfg.kl_estimator) * mask  # (B, R)
        rewards, reward_stats = per_token_rewards(
            scores, kl, mask, beta, kl_in_reward=not cfg.kl_in_loss
        )  # (B, R)
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)

        # 5. GAE (γ, λ) and advantages whitened under the mask
        advantages, returns = gae(rewards, fwd.values, mask, cfg.gamma, cfg.lam)  # (B, R)
        batch = Batch(
            roll, scores, fwd.logprobs, fwd.ref_logprobs, fwd.values,
            masked_whiten(advantages, mask), returns, fwd.critic_hidden,
        )  # fmt: skip
        value_scale = normalize_returns(
            unwrapped.value_head, returns, mask, self.accelerator, self.config.value_norm
        )
        times["time/forward"] = time.perf_counter() - t0

        # 6. PPO epochs over shuffled minibatches
        t0 = time.perf_counter()
        train_stats, skipped_steps = self._ppo_epochs(batch, beta, value_scale)
        times["time/update"] = time.perf_counter() - t0
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()

        # 7. update the KL controller with this batch's mean KL per response
        seq_kl = kl.sum(1)  # (B,)
        means = {
            "objective/kl": seq_kl.mean(),
            "objective/entropy": (-fwd.logprobs * mask).sum(1).mean(),
            "objective/non_score_reward": reward_stats["non_score_reward"].mean(),
            "objective/scores": scores.mean(),
            "val/explained_variance": explained_variance(fwd.values, returns, mask),
            "val/return_std": unwrapped.value_head.return_std.detach().clone(),
            "response/length_mean": mask.sum(1).mean(),
            "response/no_eos_frac": (~roll.has_stop).float().mean(),
            **{k: v.mean() for k, v in score_parts.items()},
            **train_stats,
        }
        keys = list(means)
        reduced = acc.reduce(torch.stack([means[k].float().to(self.device) for k in keys]), "mean")
        metrics: dict[str, Any] = {k: float(v) for k, v in zip(keys, reduced.tolist(), strict=True)}
        n_eos = (roll.responses == self.tokenizer.eos_token_id).logical_and(mask.bool()).sum()
        metrics["val/num_eos_tokens"] = int(acc.reduce(n_eos.to(self.device), "sum").item())
        metrics["objective/kl_coef"] = beta
        # β·KL uses the same estimator as the reward, so rlhf_reward = scores − β·kl exactly.
        metrics["objective/rlhf_reward"] = (
            metrics["objective/scores"] + metrics["objective/non_score_reward"]
        )
        self.kl_ctl.update(metrics["objective/kl"], cfg.batch_size)
        if "objective/gold_scores" in metrics:  # Gao et al.'s fit through the run so far
            fitted, warning = self.gao.add(
                metrics["objective/kl"], metrics["objective/gold_scores"]
            )
            metrics.update(fitted)
            if warning is not None and self.is_main:
                warnings.warn(f"update {self.step + 1}: {warning}", stacklevel=2)

        self.step += 1
        self.episode += cfg.batch_size
        skipped_steps = int(
            acc.reduce(torch.tensor(skipped_steps, device=self.device), "max").item()
        )
        self.nonfinite_total += 1 if skipped_steps else 0
        self.bad_in_a_row = self.bad_in_a_row + 1 if skipped_steps else 0
        if cfg.sample_every > 0 and self.step % cfg.sample_every == 0:
            self._write_samples(roll, scores, seq_kl)
        times["time/total"] = time.perf_counter() - t_start
        times["time/episodes_per_second"] = cfg.batch_size / times["time/total"]
        return {
            "step": self.step, "episode": self.episode, "lr": lr, **metrics,
            "update/skipped_steps": skipped_steps, "update/skipped": 0,
            "update/nonfinite_total": self.nonfinite_total, **times,
        }  # fmt: skip

    # ------------------------------------------------------------------------- the steps

    def _sample(self, policy: Any, prompts: list[Prompt]) -> Rollout:
        cfg = self.config
        return sample_rollout(
            policy, self.tokenizer, prompts, chat=self.chat, pad_id=self.pad_id,
            stop_ids=self.stop_ids, response_length=cfg.response_length,
            temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
            max_prompt_length=cfg.max_prompt_length, device=self.device,
        )  # fmt: skip

    def _score(
        self, prompts: list[Prompt], texts: list[str], has_stop: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scores (B,) on the device, plus the separate parts for logging."""
        scores, parts = self.rewards.score(prompts, texts, has_stop)
        return scores.to(self.device), {k: v.to(self.device) for k, v in parts.items()}

    def _rollout_forward(self, unwrapped: ActorCritic, roll: Rollout) -> RolloutForward:
        return rollout_forward(
            unwrapped, lambda *a: self._ref_logits(unwrapped, *a), self.critic_trunk, roll,
            self.config.temperature, self.config.forward_batch_size,
        )  # fmt: skip

    def _ref_logits(self, unwrapped: ActorCritic, ids, am, pos, keep: int) -> torch.Tensor:
        kwargs = dict(
            input_ids=ids, attention_mask=am, position_ids=pos, logits_to_keep=keep, use_cache=False
        )
        if self.ref_model is not None:
            return self.ref_model(**kwargs).logits[:, -keep:]
        with unwrapped.policy.disable_adapter():  # LoRA: the reference is the base model
            return unwrapped.policy(**kwargs).logits[:, -keep:]

    def _ppo_epochs(
        self, batch: Batch, beta: float, value_scale: float
    ) -> tuple[dict[str, torch.Tensor], int]:
        return ppo_epochs(
            self.model, self.optimizer, self.accelerator, batch, self.config, beta, value_scale,
            self.mini_batch, self.micro_batch, self.step + 1,
        )  # fmt: skip

    def _skipped_update(self, times: dict[str, float], t_start: float, why: str) -> dict[str, Any]:
        """Nothing is trained on this batch: count it and move on (the LR schedule advances)."""
        warnings.warn(f"update {self.step + 1}: {why}; update skipped", stacklevel=2)
        with warnings.catch_warnings():  # "scheduler stepped before optimizer": intended here
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        self.step += 1
        self.episode += self.config.batch_size
        self.nonfinite_total += 1
        self.bad_in_a_row += 1
        times["time/total"] = time.perf_counter() - t_start
        return {
            "step": self.step, "episode": self.episode, "objective/kl_coef": self.kl_ctl.value,
            "update/skipped_steps": 0, "update/skipped": 1,
            "update/nonfinite_total": self.nonfinite_total, **times,
        }  # fmt: skip

    def _write_samples(self, roll: Rollout, scores: torch.Tensor, seq_kl: torch.Tensor) -> None:
        if not self.is_main:
            return
        n = min(self.config.num_samples, len(roll.texts))
        with open(self.out / "samples.jsonl", "a", encoding="utf-8") as f:
            for i in range(n):
                f.write(json.dumps({
                    "step": self.step, "prompt": roll.prompts[i], "response": roll.texts[i],
                    "score": float(scores[i]), "kl": float(seq_kl[i]),
                }, ensure_ascii=False) + "\n")  # fmt: skip

    # ------------------------------------------------------------------------- hacking monitor

    def _sample_texts(self, prompt_texts: list[str]) -> tuple[list[str], list[bool]]:
        """The current policy's answers to these prompts (same temperature and length)."""
        policy = self.accelerator.unwrap_model(self.model).policy
        prompts = [self._input_of_text[p] for p in prompt_texts]
        texts: list[str] = []
        has_eos: list[bool] = []
        for s in range(0, len(prompts), self.local_batch):
            roll = self._sample(policy, prompts[s : s + self.local_batch])
            texts += roll.texts
            has_eos += roll.has_stop.tolist()
        return texts, has_eos

    def _check_hacking(self, metrics: dict[str, Any]) -> bool:
        """Run the monitor; log hacking/* into ``metrics``; every process learns the verdict."""
        from accelerate.utils import broadcast_object_list

        verdict = [False]
        self.last_hacking_warning = None
        if self.monitor is not None:
            found, warning = self.monitor.check(self.step)
            metrics.update(found)
            if warning is not None:
                verdict[0] = True
                self.last_hacking_warning = warning
                warnings.warn(f"update {self.step}: hacking monitor: {warning}", stacklevel=2)
        if self.accelerator.num_processes > 1:
            broadcast_object_list(verdict)
        return bool(verdict[0])

    def _record_stop(self) -> None:
        where = self.last_good_checkpoint or "none (the first check flagged)"
        if self.is_main:
            write_json(self.out / "stopped.json", {
                "reason": "hacking", "step": self.step, "last_good_checkpoint": where,
                "warning": self.last_hacking_warning,
            })  # fmt: skip
            warnings.warn(
                f"stopped at update {self.step}: the hacking monitor flagged the policy; "
                f"last good checkpoint: {where}",
                stacklevel=3,
            )

    # ------------------------------------------------------------------------- saving / resume

    def save_policy(self, path: str | Path) -> None:
        """The tuned policy as a plain model (LoRA adapters merged) + tokenizer, atomically."""
        self.accelerator.wait_for_everyone()
        if not self.is_main:
            return
        policy = self.accelerator.unwrap_model(self.model).policy
        if self.config.lora_r > 0:
            policy = _merged_copy(policy)
        with atomic_dir(path) as tmp:
            policy.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)

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
        """Load the newest checkpoint in --out (refusing one made with different settings)."""
        acc, cfg = self.accelerator, self.config
        path = latest_checkpoint(self.out)
        if path is None:
            warnings.warn(
                f"--resume: no checkpoint in {self.out / 'checkpoints'}; starting fresh",
                stacklevel=2,
            )
            return
        ckpt = load_checkpoint(path)
        state = ckpt.state
        diffs = resume_mismatches(
            state.get("config", {}), self._settings_as_trained(), state.get("world_size"),
            acc.num_processes,
        )  # fmt: skip
        if diffs:
            raise ConfigError(f"cannot resume from {path}: settings differ — " + "; ".join(diffs))
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


def _batch_sizes(cfg: PPOConfig, world: int) -> tuple[int, int, int]:
    """Global batch -> per process -> minibatch -> micro-batch, each dividing exactly (the error
    says which does not)."""
    if cfg.batch_size % world:
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    local = cfg.batch_size // world
    if local % cfg.num_mini_batches:
        raise ConfigError(
            f"per-process batch {local} is not divisible by --num-mini-batches {cfg.num_mini_batches}"
        )
    mini = local // cfg.num_mini_batches
    if mini % cfg.gradient_accumulation_steps:
        raise ConfigError(
            f"minibatch {mini} is not divisible by --gradient-accumulation-steps {cfg.gradient_accumulation_steps}"
        )
    return local, mini, mini // cfg.gradient_accumulation_steps


def _merged_copy(peft_model: Any) -> Any:
    """A copy of a PEFT model with its adapters merged into plain weights."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()
