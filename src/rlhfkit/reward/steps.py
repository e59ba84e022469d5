"""Step 6 of :func:`rlhfkit.reward.training.train_reward_model`: the optimizer steps.

:func:`train_steps` runs them from the resumed position to the end, with the bookkeeping around
each (skipped non-finite steps, a ``rm/*`` metrics record every ``logging_steps``, a checkpoint
every ``save_every`` steps and at each epoch's end); :class:`StepRunner` is one step: this
process's share of the global batch, in micro-batches, each forwarded once; :class:`Totals` what
the metrics average, summed on the device so that all processes add theirs in one all-reduce.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.losses import grouped_ranking_loss
from rlhfkit.reward.batching import (
    Item,
    batch_indices,
    collate_items,
    epoch_order,
    group_tensors,
    loss_weights,
    shared_prompt_rewards,
)
from rlhfkit.reward.config import RewardConfig
from rlhfkit.reward.saving import Progress, write_checkpoint
from rlhfkit.runtime.faults import inject_nan, kill_point
from rlhfkit.runtime.fsdp import clip_grad_norm, is_sharded
from rlhfkit.runtime.io import MetricsLogger
from rlhfkit.runtime.logs import get_logger
from rlhfkit.runtime.progress import progress_bar
from rlhfkit.runtime.trackers import start_trackers


def say_if(enabled: bool) -> Callable[[str], None]:
    """A one-line log message to the ``train-rm`` logger, or nothing (on processes but the main)."""

    def say(msg: str) -> None:
        if enabled:
            get_logger("train-rm").info(msg)

    return say


@dataclass(frozen=True)
class Training:
    """What the steps update and a checkpoint saves: the model as trained (wrapped by Accelerate,
    or sharded), its optimizer and schedule, with the run's settings and Accelerator."""

    config: RewardConfig
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any

    def parts(self) -> tuple[RewardConfig, Any, Any, Any]:
        """``(config, accelerator, model, optimizer)``: what checkpointing and resuming touch
        besides the scheduler."""
        return self.config, self.accelerator, self.model, self.optimizer


@dataclass
class Totals:
    """What the training metrics average, summed over optimizer steps (float32, on the device, so
    that all processes add theirs in one all-reduce)."""

    values: torch.Tensor  # (6,) in the order of FIELDS
    FIELDS = ("loss_x_prompts", "prompts", "correct_pairs", "pairs", "margin_x_pairs", "responses")

    @classmethod
    def zeros(cls, device: Any) -> Totals:
        return cls(torch.zeros(len(cls.FIELDS), device=device))

    @classmethod
    def of_micro_batch(
        cls, loss: float, prompts: int, stats: dict, responses: int, device
    ) -> Totals:
        p = float(stats["pairs"])
        parts = {
            "loss_x_prompts": loss * prompts, "prompts": float(prompts),
            "correct_pairs": float(stats["accuracy"]) * p, "pairs": p,
            "margin_x_pairs": float(stats["margin"]) * p, "responses": float(responses),
        }  # fmt: skip
        return cls(torch.tensor([parts[f] for f in cls.FIELDS], device=device))

    def __getattr__(self, name: str) -> torch.Tensor:
        if name in Totals.FIELDS:
            return self.values[Totals.FIELDS.index(name)]
        raise AttributeError(name)

    def add(self, other: Totals) -> None:
        self.values += other.values

    def reduced(self, accelerator: Any) -> Totals:
        return Totals(accelerator.reduce(self.values, reduction="sum"))


def train_steps(
    trainer: StepRunner, start: Progress, steps_per_epoch: int, total_steps: int
) -> Progress:
    """The optimizer steps from ``start.step`` to ``total_steps``: the step, the bookkeeping of
    skipped (non-finite) steps, a metrics record every ``logging_steps`` and a checkpoint every
    ``save_every`` steps and at the end of each epoch but the last. Returns the final counters."""
    training = trainer.training
    config, accelerator, scheduler = training.config, training.accelerator, training.scheduler
    main, out = accelerator.is_main_process, Path(config.out)
    say = say_if(main)
    run = dataclasses.replace(start)  # counted here; the caller's stay as they were
    n_items = len(trainer.items)
    logger = MetricsLogger(
        out / "metrics.jsonl", enabled=main, trackers=start_trackers(accelerator, config)
    )
    totals = Totals.zeros(accelerator.device)
    t_start, pairs_done, last_logged = time.perf_counter(), 0.0, run.step
    progress, task = progress_bar("train-rm", total_steps, run.step, main and config.progress)
    with progress:
        for step in range(run.step, total_steps):
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            glob = batch_indices(
                epoch_order(n_items, epoch, config.seed), step_in_epoch, config.batch_size
            )
            step_totals, grad_norm, applied = trainer.step(glob, step + 1)
            scheduler.step()
            training.optimizer.zero_grad(set_to_none=True)
            done = run.step = step + 1
            if applied:
                run.bad_in_a_row = 0
                totals.add(step_totals)
            else:
                grad_norm = None
                say(f"step {done}: non-finite loss or gradient; optimizer step skipped")
                run.skipped(out, config.max_bad_steps)
            if done % config.logging_steps == 0 or done == total_steps:
                tot = totals.reduced(accelerator)
                elapsed = time.perf_counter() - t_start
                pairs_done += float(tot.pairs)
                rec = metrics_record(
                    tot, done, steps_per_epoch, scheduler, run, grad_norm,
                    pairs_done / elapsed if elapsed > 0 else None, done - last_logged,
                )  # fmt: skip
                logger.log(rec)
                run.skipped_in_interval, last_logged = 0, done
                if rec["rm/loss"] is not None and rec["rm/accuracy"] is not None:
                    progress.update(
                        task, info=f"loss {rec['rm/loss']:.3f} acc {rec['rm/accuracy']:.3f}"
                    )
                totals = Totals.zeros(accelerator.device)
            progress.update(task, completed=done)
            # The last step needs no checkpoint: the final model is saved by the caller.
            periodic = config.save_every and done % config.save_every == 0
            if done < total_steps and run.bad_in_a_row == 0 and (periodic or done % steps_per_epoch == 0):  # fmt: skip
                run.last_good = write_checkpoint(training, run, steps_per_epoch, n_items)
                kill_point("after-checkpoint", done)
    logger.close()
    return run


class StepRunner:
    """One optimizer step: this process's share of the global batch, in micro-batches; every
    response of a micro-batch goes through the model in one forward."""

    def __init__(
        self, training: Training, rm: Any, items: list[Item], weighted: bool,
        boot: torch.Tensor | None, share_prompt: bool,
    ):  # fmt: skip
        config, accelerator = training.config, training.accelerator
        self.training, self.config, self.acc, self.rm = training, config, accelerator, rm
        self.model, self.optimizer, self.items = training.model, training.optimizer, items
        self.weighted, self.share_prompt = weighted, share_prompt
        self.boot = boot  # (items, heads) bootstrap counts of a multi-head ensemble, or None
        self.accum = config.gradient_accumulation_steps
        self.micro = config.batch_size // (accelerator.num_processes * self.accum)
        self.pad_id = rm.tokenizer.pad_token_id

    def step(self, glob: list[int], step: int) -> tuple[Totals, Any, bool]:
        """Forward and backward every micro-batch of ``glob`` (the global batch's indices), then
        step the optimizer unless a loss or gradient is non-finite on any process (the gradients
        are all-reduced, so one NaN poisons them all: weights and optimizer moments stay as they
        were; the data position and the schedule move on). Returns this step's totals, the
        gradient norm and whether the step was applied."""
        acc, cfg, micro, accum = self.acc, self.config, self.micro, self.accum
        rank = acc.process_index
        share = glob[rank * micro * accum : (rank + 1) * micro * accum]
        batch_weight = sum(self.items[i].weight for i in glob)
        totals = Totals.zeros(acc.device)
        local_finite = True
        for m in range(accum):
            idx = share[m * micro : (m + 1) * micro]
            items = [self.items[i] for i in idx]
            with nullcontext() if m == accum - 1 else acc.no_sync(self.model):
                rewards, group_ids, ranks, margins = self._rewards(items)  # (N,) or (N, heads)
                margins = margins if cfg.use_margin else None
                if rewards.dim() == 2:  # heads: the mean of the heads' losses
                    loss, stats = self._heads_loss(rewards, group_ids, ranks, margins, idx, glob)
                else:
                    weighting = (
                        loss_weights(items, batch_weight, acc.num_processes * accum, ranks.device)
                        if self.weighted
                        else {}
                    )
                    loss, stats = grouped_ranking_loss(
                        rewards, group_ids, ranks, margins, **weighting
                    )
                if cfg.center_rewards_coefficient > 0:
                    loss = loss + cfg.center_rewards_coefficient * (rewards**2).mean()
                if inject_nan("loss", step):
                    loss = loss * float("nan")
                local_finite &= bool(torch.isfinite(loss))
                # backward even on a non-finite loss: every process must join the all-reduce
                acc.backward(loss / accum)
            totals.add(
                Totals.of_micro_batch(loss.item(), len(items), stats, rewards.numel(), acc.device)
            )
        params = self.model.parameters
        sharded = is_sharded(self.model)
        clip = clip_grad_norm if sharded else acc.clip_grad_norm_
        grad_norm = clip(params(), cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        # The clipped norm is non-finite exactly when a gradient is: one check instead of one
        # per parameter tensor (of a sharded model, the norm of all shards).
        if grad_norm is None and sharded:
            finite = local_finite and bool(torch.isfinite(clip(params(), math.inf)))
        else:
            finite = local_finite and (
                bool(torch.isfinite(grad_norm))
                if grad_norm is not None
                else all(torch.isfinite(p.grad).all() for p in params() if p.grad is not None)
            )
        flag = torch.tensor(float(finite), device=acc.device)
        applied = acc.reduce(flag, reduction="sum").item() >= acc.num_processes
        if applied:
            self.optimizer.step()
            kill_point("update", step)  # crash tests: weights changed, nothing saved
        return totals, grad_norm, applied

    def _heads_loss(
        self, rewards: torch.Tensor, group_ids: torch.Tensor, ranks: torch.Tensor,
        margins: torch.Tensor | None, idx: list[int], glob: list[int],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """A multi-head ensemble's loss: the mean over heads of each head's loss, each weighing a
        ranking by its weight times that head's bootstrap count (a weighted mean over the whole
        global batch, as for one head); stats of the heads' mean reward."""
        parts = self.acc.num_processes * self.config.gradient_accumulation_steps
        losses = []
        for h in range(rewards.shape[1]):
            weighting: dict[str, Any] = {}
            if self.boot is not None or self.weighted:
                count = [1.0] * len(self.items) if self.boot is None else self.boot[:, h].tolist()
                weight = [it.weight * c for it, c in zip(self.items, count, strict=True)]
                weighting = {
                    "weights": torch.tensor([weight[i] for i in idx], device=rewards.device),
                    "weight_total": sum(weight[i] for i in glob) / parts,
                }
            losses.append(
                grouped_ranking_loss(rewards[:, h], group_ids, ranks, margins, **weighting)[0]
            )
        with torch.no_grad():
            _, stats = grouped_ranking_loss(rewards.mean(1), group_ids, ranks, margins)
        return torch.stack(losses).mean(), stats

    def _rewards(self, items: list[Item]) -> tuple[torch.Tensor, ...]:
        """Raw rewards (N,) of the items' responses, their group ids and ranks (N,), margins (G,)."""
        acc = self.acc
        if self.share_prompt and all(it.prefix > 0 for it in items):
            group_ids, ranks, margins = group_tensors(items, acc.device)
            with acc.autocast():
                return (
                    shared_prompt_rewards(self.model, items, self.pad_id),
                    group_ids,
                    ranks,
                    margins,
                )
        batch, group_ids, ranks, margins = collate_items(self.rm, items)
        with acc.autocast():
            return self.rm.raw_rewards(batch, model=self.model), group_ids, ranks, margins


def metrics_record(
    tot: Totals, done: int, steps_per_epoch: int, scheduler: Any, run: Progress, grad_norm: Any,
    pairs_per_s: float | None, steps_in_interval: int,
) -> dict[str, Any]:  # fmt: skip
    """The ``rm/*`` line of metrics.jsonl: means over the logging interval (None when every step
    of the interval was skipped, non-finite)."""
    per_pair = lambda x: float(x / tot.pairs) if tot.pairs > 0 else None  # noqa: E731
    return {
        "step": done,
        "epoch": round(done / steps_per_epoch, 4),
        "rm/loss": float(tot.loss_x_prompts / tot.prompts) if tot.prompts > 0 else None,
        "rm/accuracy": per_pair(tot.correct_pairs),
        "rm/margin": per_pair(tot.margin_x_pairs),
        "rm/lr": scheduler.get_last_lr()[0],
        "rm/skipped_steps": run.skipped_in_interval,
        "rm/nonfinite_total": run.nonfinite_total,
        "rm/pairs": int(tot.pairs),
        "rm/grad_norm": float(grad_norm) if grad_norm is not None else None,
        "perf/pairs_per_s": pairs_per_s,
        "perf/responses_per_step": float(tot.responses) / steps_in_interval,
    }


def bootstrap_weights(n_items: int, heads: int, seed: int) -> torch.Tensor:
    """Poisson(1) counts (items, heads): each head's bootstrap resample of the training rankings
    (the online bootstrap), fixed by the seed."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    return torch.poisson(torch.ones(n_items, heads), generator=g)
