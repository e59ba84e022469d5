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
The steps live in :mod:`.steps` (6.), :mod:`.saving` (5., 9. and the checkpoints) and
:mod:`.evaluate` (7., 8.).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.errors import ConfigError, DataError
from rlhfkit.loading import fuse_activations
from rlhfkit.reward.batching import (
    can_share_prompt,
    distinct_prompts,
    prepare_items,
    split_by_prompt,
    split_description,
)
from rlhfkit.reward.config import RewardConfig
from rlhfkit.reward.evaluate import evaluate_held_out, n_pairs, normalize
from rlhfkit.reward.saving import (
    CHECKPOINTS,
    Progress,
    prepare_out,
    resume_run,
    save_heads,
    save_run,
)
from rlhfkit.reward.steps import (
    StepRunner,
    Totals,
    Training,
    bootstrap_weights,
    say_if,
    train_steps,
)
from rlhfkit.runtime.distributed import make_accelerator
from rlhfkit.runtime.fsdp import device_mesh, fsdp_settings, launched_with_fsdp, shard
from rlhfkit.runtime.optim import adamw
from rlhfkit.runtime.trackers import tracker_kwargs

__all__ = ["CHECKPOINTS", "Progress", "Totals", "train_reward_model"]


def train_reward_model(config: RewardConfig) -> dict[str, Any]:
    """Train, normalize, evaluate and save a reward model; returns the eval results (eval.json)."""
    from accelerate.utils import set_seed

    config, accelerator = _start(config)
    say = say_if(accelerator.is_main_process)

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
    steps_per_epoch = math.ceil(len(items.train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    say(
        f"{len(items.train)} training rankings of {distinct_prompts(train_rankings)} "
        f"({sum(len(it.ranks) for it in items.train)} responses, {items.pairs_per_epoch} ordered "
        f"pairs), {len(items.eval)} held out ({distinct_prompts(eval_rankings)}); {total_steps} "
        f"steps of {config.batch_size} rankings on {accelerator.num_processes} process(es)"
    )

    # 4. Optimizer, schedule, Accelerate (the model sharded first with --fsdp).
    training = _training(config, accelerator, rm, total_steps)

    # 5. Resume: model/optimizer/scheduler/RNG from the newest checkpoint; the data position is
    # (epoch, step) because each epoch's order is a pure function of (seed, epoch).
    start = Progress()
    if config.resume:
        start = resume_run(training, len(items.train))
        say(f"resumed from {start.last_good} (step {start.step} of {total_steps})")
    Path(config.out).mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    # 6. Train. Each step: the global batch of prompts, this process's share, split into
    # micro-batches; all responses of a micro-batch go through the model in one forward.
    boot = None
    if config.bootstrap and heads > 1:  # each head learns from its own resample of the rankings
        boot = bootstrap_weights(len(items.train), heads, config.seed)
    trainer = StepRunner(
        training, rm, items.train, items.weighted, boot, _share_prompt(training, rm)
    )
    t_start = time.perf_counter()
    train_steps(trainer, start, steps_per_epoch, total_steps)
    train_seconds = time.perf_counter() - t_start
    rm.model = accelerator.unwrap_model(training.model)
    rm.model.eval()
    if heads > 1:  # 7.-9. for each head: a member of the ensemble in OUT/member-i
        return save_heads(rm, heads, config, accelerator, train_rankings, items.eval, say)

    # 7. Normalize: gain/bias so scores of the reference responses have mean 0, std 1.
    if config.normalize:
        normalize(rm, config, accelerator, train_rankings, say)

    # 8. Evaluate on the held-out rankings (normalized scores).
    split = config.eval_data or split_description(list(train_pref), config.eval_split, config.data)
    results = evaluate_held_out(rm, config, accelerator, items.eval, eval_rankings, split, say)
    results.update({
        "eval_data": split,
        "normalized": rm.settings.normalized_on is not None,
        "train_prompts": len(items.train),
        "train_pairs_per_epoch": items.pairs_per_epoch,
        "steps": total_steps,
        "train_seconds": round(train_seconds, 3),
        "overlong": {"policy": config.overlong, "train": items.counts, "eval": items.eval_counts},
    })  # fmt: skip

    # 9. Save: OUT becomes the reward model directory, atomically (then its model card).
    save_run(rm, config, accelerator, results, say)
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
    prepare_out(Path(config.out), config, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    return config, accelerator


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


def _training(config: RewardConfig, accelerator: Any, rm: Any, total_steps: int) -> Training:
    """4. The model as trained, its optimizer and schedule. The scheduler is stepped once per
    optimizer step and is not passed to prepare() (which would step it once per process); it is
    checkpointed instead."""
    if config.fsdp:  # sharded before the optimizer sees its parameters (rlhfkit.runtime.fsdp)
        settings = fsdp_settings(accelerator.mixed_precision)
        shard(rm.model, device_mesh(accelerator.device), settings)
    optimizer, scheduler = _optimizer(config, rm.model, total_steps)
    model, optimizer = (
        (rm.model, optimizer) if config.fsdp else accelerator.prepare(rm.model, optimizer)
    )
    model.train()
    return Training(config, accelerator, model, optimizer, scheduler)


def _share_prompt(training: Training, rm: Any) -> bool:
    """Whether each ranking's prompt is forwarded once for its K responses (the same rewards; see
    :func:`rlhfkit.reward.batching.shared_prompt_rewards`): one process, no FSDP, plain-text
    input, a model called directly (not through a wrapper) that supports it."""
    config, accelerator, model = training.config, training.accelerator, training.model
    return (
        config.share_prompt and accelerator.num_processes == 1 and not config.fsdp
        and rm.settings.input_format == "template"
        and accelerator.unwrap_model(model) is model
        and can_share_prompt(model, rm.settings.max_length)
    )  # fmt: skip
