"""Ranking-native reward-model training (InstructGPT, Ouyang et al. 2022, §3.5).

A batch element is one prompt with its K ranked responses. Every response of the batch is forwarded
exactly once, and the loss is :func:`rlhfkit.losses.grouped_ranking_loss`: for each prompt the mean
Bradley-Terry loss ``−log σ(r_w − r_l − margin)`` over its K(K−1)/2 strictly ordered pairs (ties give
no pair), averaged over prompts (weighted by each record's ``weight`` when it has one). Expanding a
ranking into independent pairs (TRL) forwards each response K−1 times and, shuffled, overfits within
one epoch (InstructGPT); the gradient here equals that of the pairwise-expanded loss grouped by
prompt, at K forwards instead of K(K−1).

``train_reward_model(config)`` reads top to bottom:
1. data (+ held-out split), 2. model, 3. tokenize once (truncate or drop over-long items),
4. optimizer / schedule / Accelerate, 5. resume, 6. train loop, 7. normalize, 8. evaluate, 9. save.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.cards import publish_reward_model, reward_model_card, write_card
from rlhfkit.errors import ConfigError, DataError
from rlhfkit.loading import fuse_activations
from rlhfkit.losses import grouped_ranking_loss
from rlhfkit.reward.batching import (
    Item,
    batch_indices,
    can_share_prompt,
    collate_items,
    distinct_prompts,
    epoch_order,
    group_tensors,
    loss_weights,
    prepare_items,
    shared_prompt_rewards,
    split_by_prompt,
    split_description,
)
from rlhfkit.reward.config import RewardConfig, fingerprint, resume_mismatches
from rlhfkit.reward.evaluate import (
    evaluate,
    jsonable,
    n_pairs,
    pair_metrics,
    read_reference,
    score_sharded,
)
from rlhfkit.runtime.checkpoint import (
    TrainingStopped,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    stage_shards,
)
from rlhfkit.runtime.distributed import make_accelerator
from rlhfkit.runtime.faults import inject_nan, kill_point
from rlhfkit.runtime.fsdp import (
    clip_grad_norm,
    device_mesh,
    fsdp_settings,
    full_copy,
    is_sharded,
    launched_with_fsdp,
    read_shards,
    shard,
)
from rlhfkit.runtime.io import (
    MetricsLogger,
    atomic_dir,
    clear_previous_run,
    link_or_copy,
    recover_interrupted_dir,
    truncate_jsonl,
    write_json,
)
from rlhfkit.runtime.logs import get_logger
from rlhfkit.runtime.optim import adamw
from rlhfkit.runtime.progress import progress_bar
from rlhfkit.runtime.trackers import LOGGING_DIR, start_trackers, tracker_kwargs

CHECKPOINTS = "checkpoints"


def _log(enabled: bool, msg: str) -> None:
    if enabled:
        get_logger("train-rm").info(msg)


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


@dataclass
class Progress:
    """The counters a checkpoint carries (besides the model, optimizer, scheduler and RNG)."""

    step: int = 0
    bad_in_a_row: int = 0
    nonfinite_total: int = 0
    skipped_in_interval: int = 0
    last_good: str | None = None

    def skipped(self, out: Path, max_bad_steps: int) -> None:
        """One more optimizer step skipped for a non-finite loss or gradient; after
        ``max_bad_steps`` in a row, stop (naming the last good checkpoint)."""
        self.bad_in_a_row += 1
        self.nonfinite_total += 1
        self.skipped_in_interval += 1
        if self.bad_in_a_row >= max_bad_steps:
            raise TrainingStopped(
                f"{self.bad_in_a_row} optimizer steps in a row had a non-finite loss or "
                "gradient (none was applied); stopping. Last good checkpoint: "
                + (self.last_good or f"none was saved (use --save-every); {out} was left as it was")
            )


def train_reward_model(config: RewardConfig) -> dict[str, Any]:
    """Train, normalize, evaluate and save a reward model; returns the eval results (eval.json)."""
    from accelerate.utils import set_seed

    config, accelerator = _start(config)
    main = accelerator.is_main_process
    say = lambda msg: _log(main, msg)  # noqa: E731
    out = Path(config.out)

    # 1. Data: training rankings and the held-out set (by prompt, so no prompt leaks).
    train_pref, train_rankings, eval_rankings = _read_data(config, say)

    # 2. Model: head init N(0, 1/√(d+1)) is random, so seed first (same on every process).
    set_seed(config.seed)
    rm = _load_model(config, train_rankings + eval_rankings, say)
    heads = config.ensemble if config.ensemble_kind == "heads" and config.ensemble > 1 else 1
    if heads > 1:
        rm.with_heads(heads)  # an ensemble of heads on one trunk (reward/ensemble.py)
    rm.to(accelerator.device)

    # 3. Tokenize every response once; over-long items truncated from the left or dropped.
    items = _tokenize(rm, config, train_rankings, eval_rankings, say)
    train_items, eval_items = items.train, items.eval
    steps_per_epoch = math.ceil(len(train_items) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    say(
        f"{len(train_items)} training rankings of {distinct_prompts(train_rankings)} "
        f"({sum(len(it.ranks) for it in train_items)} responses, {items.pairs_per_epoch} ordered "
        f"pairs), {len(eval_items)} held out ({distinct_prompts(eval_rankings)}); {total_steps} "
        f"steps of {config.batch_size} rankings on {accelerator.num_processes} process(es)"
    )

    # 4. Optimizer, schedule, Accelerate. The scheduler is stepped once per optimizer step and is
    # not passed to prepare() (which would step it once per process); it is checkpointed instead.
    if config.fsdp:  # sharded before the optimizer sees its parameters (rlhfkit.runtime.fsdp)
        settings = fsdp_settings(accelerator.mixed_precision)
        shard(rm.model, device_mesh(accelerator.device), settings)
    optimizer, scheduler = _optimizer(config, rm.model, total_steps)
    model, optimizer = (
        (rm.model, optimizer) if config.fsdp else accelerator.prepare(rm.model, optimizer)
    )
    model.train()

    # 5. Resume: model/optimizer/scheduler/RNG from the newest checkpoint; the data position is
    # (epoch, step) because each epoch's order is a pure function of (seed, epoch).
    run = Progress()
    if config.resume:
        run = _resume(out, config, accelerator, model, optimizer, scheduler, len(train_items))
        say(f"resumed from {run.last_good} (step {run.step} of {total_steps})")
    out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    # 6. Train. Each step: the global batch of prompts, this process's share, split into
    # micro-batches; all responses of a micro-batch go through the model in one forward.
    trainer = _StepRunner(
        config, accelerator, rm, model, optimizer, train_items, items.weighted,
        _bootstrap_weights(len(train_items), heads, config.seed) if config.bootstrap and heads > 1 else None,
        # Each ranking's prompt forwarded once (the same rewards; see shared_prompt_rewards).
        share_prompt=config.share_prompt and accelerator.num_processes == 1 and not config.fsdp
        and rm.settings.input_format == "template"
        and accelerator.unwrap_model(model) is model
        and can_share_prompt(model, rm.settings.max_length),
    )  # fmt: skip
    t_start = time.perf_counter()
    _train_steps(trainer, scheduler, run, steps_per_epoch, total_steps)
    train_seconds = time.perf_counter() - t_start
    rm.model = accelerator.unwrap_model(model)
    rm.model.eval()
    if heads > 1:  # 7.-9. for each head: a member of the ensemble in OUT/member-i
        return _save_heads(rm, heads, config, accelerator, train_rankings, eval_items, say)

    # 7. Normalize: gain/bias so scores of the reference responses have mean 0, std 1.
    if config.normalize:
        _normalize(rm, config, accelerator, train_rankings, say)

    # 8. Evaluate on the held-out rankings (normalized scores).
    split = config.eval_data or split_description(list(train_pref), config.eval_split, config.data)
    results = _evaluate_held_out(rm, config, accelerator, eval_items, eval_rankings, split, say)
    results.update({
        "eval_data": split,
        "normalized": rm.settings.normalized_on is not None,
        "train_prompts": len(train_items),
        "train_pairs_per_epoch": items.pairs_per_epoch,
        "steps": total_steps,
        "train_seconds": round(train_seconds, 3),
        "overlong": {"policy": config.overlong, "train": items.counts, "eval": items.eval_counts},
    })  # fmt: skip

    # 9. Save: OUT becomes the reward model directory, atomically, by the main process.
    accelerator.wait_for_everyone()
    if config.fsdp:  # gathered onto the main process (None elsewhere), as one plain model
        rm = _with_model(rm, full_copy(rm.model))
    if main:
        _save_final(rm, out, {"eval.json": jsonable(results)})
        say(f"saved the reward model to {out}")
    accelerator.wait_for_everyone()
    if main:  # OUT/README.md, the model card (and the upload with --push-to-hub)
        publish_reward_model(config, jsonable(results))
    return results


@dataclass
class _Tokenized:
    train: list[Any]
    eval: list[Any]
    counts: dict[str, int]
    """What happened to over-long training items (kept, truncated, dropped)."""
    eval_counts: dict[str, int]
    pairs_per_epoch: int
    weighted: bool
    """Some record has a weight other than 1: the loss is the weighted mean (else the plain one)."""


def _tokenize(
    rm: Any, config: RewardConfig, train_rankings: list[Any], eval_rankings: list[Any], say: Any
) -> _Tokenized:
    """Every response tokenized once (:func:`prepare_items`), over-long ones handled by
    ``config.overlong``; refuses a training set with no ordered pair or with every weight 0."""
    train, counts = prepare_items(rm, train_rankings, config.overlong, config.use_margin)
    held_out, eval_counts = prepare_items(rm, eval_rankings, config.overlong, config.use_margin)
    if not train:
        raise DataError("no training ranking with an ordered pair left", config.data)
    _say_overlong(say, config.overlong, counts, eval_counts, rm.settings.max_length)
    weighted = config.use_weight and any(it.weight != 1.0 for it in train)
    if weighted and not any(it.weight > 0 for it in train):
        raise DataError("every training ranking has weight 0: nothing to learn from", config.data)
    pairs = sum(n_pairs(it.ranks) for it in train)
    return _Tokenized(train, held_out, counts, eval_counts, pairs, weighted)


def _start(config: RewardConfig) -> tuple[RewardConfig, Any]:
    """Check the model source and the batch's divisibility before anything is read or written,
    make the Accelerator (with the trackers) and prepare OUT. An Accelerate FSDP config means
    ``--fsdp``."""
    from rlhfkit.loading import check_model_source

    check_model_source(config.model, "--model")
    if launched_with_fsdp() and not config.fsdp:
        config = dataclasses.replace(config, fsdp=True)
    accelerator = make_accelerator(
        mixed_precision=config.mixed_precision,
        **tracker_kwargs(config.report_to, config.out, config.run_name),
    )
    n_proc, accum = accelerator.num_processes, config.gradient_accumulation_steps
    if config.batch_size % (n_proc * accum):
        raise ConfigError(
            f"batch_size {config.batch_size} must be divisible by processes × "
            f"gradient_accumulation_steps = {n_proc} × {accum} = {n_proc * accum}"
        )
    _prepare_out(Path(config.out), config, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    return config, accelerator


def _train_steps(
    trainer: _StepRunner, scheduler: Any, run: Progress, steps_per_epoch: int, total_steps: int
) -> None:
    """The optimizer steps from ``run.step`` to ``total_steps``: the step, the bookkeeping of
    skipped (non-finite) steps, a metrics record every ``logging_steps`` and a checkpoint every
    ``save_every`` steps and at the end of each epoch but the last."""
    config, accelerator = trainer.config, trainer.acc
    main, out = accelerator.is_main_process, Path(config.out)
    say = lambda msg: _log(main, msg)  # noqa: E731
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
            trainer.optimizer.zero_grad(set_to_none=True)
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
                rec = _metrics_record(
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
                run.last_good = _save_checkpoint(
                    out, config, accelerator, trainer.model, trainer.optimizer, scheduler, run,
                    steps_per_epoch, n_items,
                )  # fmt: skip
                kill_point("after-checkpoint", done)
    logger.close()


def _evaluate_held_out(
    rm: Any, config: RewardConfig, accelerator: Any, eval_items: list[Any],
    eval_rankings: list[Any], split: str, say: Any,
) -> dict[str, Any]:  # fmt: skip
    """Pairwise accuracy, margin and loss on the held-out rankings (a note when there are none)."""
    if not eval_items:
        return {**pair_metrics([], []), "note": "no held-out data: " + split}
    results = evaluate(rm, eval_items, accelerator, config.eval_batch_size)
    say(
        f"held-out accuracy {results['accuracy']:.4f} on {results['n_pairs']} pairs of "
        f"{results['n_rankings']} rankings of {distinct_prompts(eval_rankings)} "
        f"(margin {results['margin']:.3f}, loss {results['loss']:.4f})"
    )
    return results


# -------------------------------------------------------------------------------- the steps


def _prepare_out(out: Path, config: RewardConfig, main: bool) -> None:
    """Recover from a kill during the final save; refuse to mix two runs in one OUT."""
    recover_interrupted_dir(out)  # a kill while the final save replaced OUT left the old one aside
    if config.resume and latest_checkpoint(out) is None:
        raise ConfigError(
            f"{out}: --resume given but there is no checkpoint in {out / CHECKPOINTS}"
        )
    clear_previous_run(
        out, ("metrics.jsonl", CHECKPOINTS, LOGGING_DIR),
        resume=config.resume, overwrite=config.overwrite, delete=main,
    )  # fmt: skip


def _read_data(config: RewardConfig, say: Any) -> tuple[Any, list[Any], list[Any]]:
    """1. The training preferences and the held-out rankings (``--eval-data`` or a split)."""
    from rlhfkit.data import read_preferences

    train_pref = read_preferences(
        config.data, format=config.format, skip_invalid=config.skip_invalid
    )
    say(train_pref.report())
    if config.eval_data is None:
        return train_pref, *split_by_prompt(list(train_pref), config.eval_split, config.seed)
    eval_pref = read_preferences(
        config.eval_data, format=config.format, skip_invalid=config.skip_invalid
    )
    say(eval_pref.report())
    return train_pref, list(train_pref), list(eval_pref)


def _load_model(config: RewardConfig, rankings: list[Any], say: Any) -> Any:
    """2. The backbone with a one-output head, reading conversations through its chat template
    when the data has any (``--chat-template``)."""
    from rlhfkit.reward.model import RewardModel

    rm = RewardModel.from_pretrained(
        config.model,
        template=config.template,
        max_length=config.max_length,
        chat_template=config.chat_template,
        conversational=any(r.is_conversational for r in rankings),
    )
    if rm.settings.input_format == "chat":
        say("conversations are rendered with the model's chat template (--chat-template never: plain text)")  # fmt: skip
    fuse_activations(rm.model)  # GPT-2's Python GELU -> torch's kernel for the same function
    return rm


def _say_overlong(say: Any, policy: str, counts: dict, eval_counts: dict, max_length: int) -> None:
    if not (counts["overlong"] or eval_counts["overlong"]):
        return
    verb = "truncated" if policy == "truncate" else "dropped"
    left = counts["dropped_rankings"]
    say(
        f"{counts['overlong']} training and {eval_counts['overlong']} eval responses are longer "
        f"than {max_length} tokens: {verb}"
        + (f" ({left} rankings left without a pair)" if left else "")
    )


def _optimizer(config: RewardConfig, model: Any, total_steps: int) -> tuple[Any, Any]:
    """4. AdamW (no weight decay on biases and norms) and the warmup + decay schedule."""
    from transformers import get_scheduler

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = adamw(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate, eps=config.adam_epsilon,
    )  # fmt: skip
    kind = config.lr_scheduler_type
    scheduler = get_scheduler(
        "constant_with_warmup" if kind == "constant" else kind,
        optimizer,
        num_warmup_steps=round(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return optimizer, scheduler


class _StepRunner:
    """One optimizer step of 6.: this process's share of the global batch, in micro-batches."""

    def __init__(
        self, config: RewardConfig, accelerator: Any, rm: Any, model: Any, optimizer: Any,
        items: list[Item], weighted: bool, boot: torch.Tensor | None, share_prompt: bool,
    ):  # fmt: skip
        self.config, self.acc, self.rm, self.model = config, accelerator, rm, model
        self.optimizer, self.items = optimizer, items
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


def _metrics_record(
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


def _normalize(
    rm: Any, config: RewardConfig, accelerator: Any, rankings: list[Any], say: Any
) -> None:
    """7. Gain and bias so that the reference responses (``--normalize-data``, else the training
    responses; at most ``--normalize-samples`` of them) score mean 0, std 1 (lm-human-preferences)."""
    if config.normalize_data is not None:
        prompts, responses = read_reference(config.normalize_data, config.format)
    else:
        prompts = [r.model_prompt for r in rankings for _ in r.responses]
        responses = [x.model_input for r in rankings for x in r.responses]
    pick = list(range(len(responses)))
    random.Random(config.seed).shuffle(pick)
    pick = sorted(pick[: config.normalize_samples])
    feats, _ = rm.encode([prompts[i] for i in pick], [responses[i] for i in pick])
    raw = score_sharded(rm, accelerator, feats, config.eval_batch_size)
    try:
        gain, bias = rm.set_normalization(raw)
        say(f"normalized on {len(pick)} reference responses: gain {gain:.4g}, bias {bias:.4g}")
    except ValueError as e:
        say(f"normalization skipped: {e}")


# ------------------------------------------------------------------ a multi-head ensemble


def _bootstrap_weights(n_items: int, heads: int, seed: int) -> torch.Tensor:
    """Poisson(1) counts (items, heads): each head's bootstrap resample of the training rankings
    (the online bootstrap), fixed by the seed."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    return torch.poisson(torch.ones(n_items, heads), generator=g)


def _save_heads(
    rm: Any, heads: int, config: RewardConfig, accelerator: Any, train_rankings: list[Any],
    eval_items: list[Item], say: Any,
) -> dict[str, Any]:  # fmt: skip
    """Each head with the trunk becomes an ordinary reward model in ``OUT/member-i/``: normalized
    on the reference responses, evaluated on the held-out rankings (its ``eval.json``)."""
    members = []
    for i in range(heads):
        member = rm.single_head(i)
        if config.normalize:
            _normalize(member, config, accelerator, train_rankings, say)
        res = (
            evaluate(member, eval_items, accelerator, config.eval_batch_size) if eval_items else {}
        )
        if accelerator.is_main_process:
            with atomic_dir(Path(config.out) / f"member-{i}") as tmp:
                member.save_pretrained(tmp)
                write_json(tmp / "eval.json", jsonable(res))
            path = Path(config.out) / f"member-{i}"
            write_card(path, reward_model_card(config, jsonable(res), path))
        members.append(res)
        say(f"head {i}: held-out accuracy {res.get('accuracy', float('nan')):.4f}")
    accelerator.wait_for_everyone()
    return {"members": members}


# ------------------------------------------------------------------------- checkpoint and save


def _save_checkpoint(
    out: Path, config: RewardConfig, accelerator: Any, model: Any, optimizer: Any, scheduler: Any,
    run: Progress, steps_per_epoch: int, n_train: int,
) -> str:  # fmt: skip
    """``OUT/checkpoints/step-N/`` through the one checkpoint system (:mod:`rlhfkit.runtime.checkpoint`):
    the weights, optimizer and scheduler states, every process's RNG state and the counters."""
    rng = _gather([capture_rng_state()])  # one entry per process, rank order
    accelerator.wait_for_everyone()
    path = out / CHECKPOINTS / f"step-{run.step}"
    # A sharded model and its optimizer: every process writes its shard (sharded/).
    shards = (
        stage_shards(accelerator, out, run.step, model, optimizer) if is_sharded(model) else None
    )
    if accelerator.is_main_process:
        state = {
            "step": run.step,
            "epoch": run.step // steps_per_epoch,
            "step_in_epoch": run.step % steps_per_epoch,
            "n_train": n_train,
            "world_size": accelerator.num_processes,
            "bad_in_a_row": run.bad_in_a_row,
            "nonfinite_total": run.nonfinite_total,
            "config": fingerprint(config),
        }
        objects = {"scheduler": scheduler.state_dict(), "rng": rng}
        tensors, directories = {}, {}
        if shards is None:
            tensors["reward_model"] = accelerator.unwrap_model(model).state_dict()
            objects["optimizer"] = optimizer.state_dict()
        else:
            directories["sharded"] = shards
        path = save_checkpoint(
            out, run.step, state=state, tensors=tensors, objects=objects,
            directories=directories, keep_last=config.save_total_limit,
        )  # fmt: skip
    accelerator.wait_for_everyone()
    return str(path)


def _gather(objects: list[Any]) -> list[Any]:
    from accelerate.utils import gather_object

    return gather_object(objects)


def _resume(
    out: Path, config: RewardConfig, accelerator: Any, model: Any, optimizer: Any, scheduler: Any,
    n_train: int,
) -> Progress:  # fmt: skip
    """5. The newest checkpoint's weights, optimizer, scheduler and RNG states, and counters;
    refused when the settings, the data or the number of processes changed."""
    path = latest_checkpoint(out)
    ckpt = load_checkpoint(path)
    state = ckpt.state
    changed = resume_mismatches(state["config"], config)
    saved_world = state.get("world_size", 1)
    if saved_world != accelerator.num_processes:
        changed["processes"] = (saved_world, accelerator.num_processes)
    if changed:
        diff = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(f"{path}: cannot resume with changed settings ({diff})")
    if state["n_train"] != n_train:
        raise ConfigError(
            f"{path}: the training data changed ({state['n_train']} -> {n_train} prompts)"
        )
    if is_sharded(model):
        read_shards(ckpt.model_dir("sharded"), model, optimizer)
    elif not ckpt.has("reward_model"):
        raise ConfigError(
            f"{path}: written by an older rlhfkit (before reward-model checkpoints used the common "
            "format); start afresh with --overwrite"
        )
    else:
        accelerator.unwrap_model(model).load_state_dict(ckpt.tensors("reward_model"))
        optimizer.load_state_dict(ckpt.object("optimizer"))
    scheduler.load_state_dict(ckpt.object("scheduler"))
    restore_rng_state(ckpt.object("rng")[accelerator.process_index])
    step = int(state["step"])
    if accelerator.is_main_process:
        truncate_jsonl(out / "metrics.jsonl", step)  # a crashed run's tail
    return Progress(
        step=step,
        bad_in_a_row=int(state.get("bad_in_a_row", 0)),
        nonfinite_total=int(state.get("nonfinite_total", 0)),
        last_good=str(path),
    )


def _with_model(rm: Any, model: Any) -> Any:
    """The same reward model (tokenizer, settings) around another copy of its weights."""
    from rlhfkit.reward.model import RewardModel

    return RewardModel(model, rm.tokenizer, rm.settings) if model is not None else rm


def _save_final(rm: Any, out: Path, extra_json: dict[str, Any]) -> None:
    """Replace OUT atomically with the model + tokenizer + ``extra_json`` files, carrying over the
    run's other files (metrics.jsonl, checkpoints/) by hard link, so that a kill at any moment
    leaves the old OUT or the new one, never a mix."""
    import shutil

    with atomic_dir(out) as tmp:
        rm.save_pretrained(tmp)
        for name, obj in extra_json.items():
            write_json(tmp / name, obj)
        if out.is_dir():
            for entry in out.iterdir():
                if (tmp / entry.name).exists():
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, tmp / entry.name, copy_function=link_or_copy)
                else:
                    link_or_copy(entry, tmp / entry.name)
