"""Step 6 of the loop: the PPO epochs over one batch of experience (CleanRL's update), and the
running statistics of the returns that the value head learns in (``--value-norm``, PopArt)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from typing import Any

import torch

from rlhfkit.losses import ppo_loss
from rlhfkit.ops import entropy_from_logits, logprobs_from_logits, masked_whiten
from rlhfkit.ppo.config import PPOConfig
from rlhfkit.ppo.rollout import Rollout
from rlhfkit.runtime.faults import inject_nan, kill_point
from rlhfkit.runtime.fsdp import clip_grad_norm, is_sharded

# Decay per update of the value head's running return statistics (``value_norm``): they follow the
# rising reward over about ten updates; debiased, so the first batch counts fully.
RETURN_STATS_DECAY = 0.9


@dataclasses.dataclass(frozen=True)
class Batch:
    """A rollout with everything the PPO epochs train on (local to this process): scores (B,),
    and (B, R) buffers; ``critic_hidden`` (B, R + 1, H) is a frozen critic trunk's, cached."""

    roll: Rollout
    b_scores: torch.Tensor
    b_logprobs: torch.Tensor
    b_ref_logprobs: torch.Tensor
    b_values: torch.Tensor
    b_advantages: torch.Tensor
    b_returns: torch.Tensor
    critic_hidden: torch.Tensor | None


def normalize_returns(
    value_head: Any, returns: torch.Tensor, mask: torch.Tensor, accelerator: Any, enabled: bool
) -> float:
    """With ``--value-norm``: fold this batch's returns (all processes) into the value head's
    running statistics; returns the factor that puts values in those units (1 without)."""
    if not enabled:
        return 1.0
    m = mask.float()
    sums = torch.stack([(returns * m).sum(), (returns.square() * m).sum(), m.sum()])
    total, total_sq, n = accelerator.reduce(sums.to(accelerator.device), "sum").tolist()
    value_head.update_return_stats(total / max(n, 1.0), total_sq / max(n, 1.0), RETURN_STATS_DECAY)
    return 1.0 / float(value_head.return_std)


def whiten_across(
    values: torch.Tensor, mask: torch.Tensor, accelerator: Any, shift_mean: bool = True
) -> torch.Tensor:
    """:func:`rlhfkit.ops.masked_whiten` with the mean and (Bessel-corrected) variance of the
    masked elements of every process's batch, so that N processes whiten their shares of a global
    batch exactly as one process whitens all of it. values, mask: (B, R)."""
    if accelerator.num_processes == 1:
        return masked_whiten(values, mask, shift_mean)
    m = mask.to(values.dtype)
    sums = torch.stack([(values * m).sum(), m.sum()]).to(accelerator.device)
    total, n = accelerator.reduce(sums, "sum").tolist()
    mean = total / max(n, 1.0)
    sq = accelerator.reduce((((values - mean) ** 2) * m).sum().to(accelerator.device), "sum")
    var = float(sq) / max(n, 1.0) * (n / (n - 1) if n > 1 else 1.0)
    whitened = (values - mean) * torch.rsqrt(torch.tensor(var + 1e-8, dtype=values.dtype))
    if not shift_mean:
        whitened = whitened + mean
    return whitened * m


def token_shares(
    mask: torch.Tensor, rows: torch.Tensor, micro_batch: int, accelerator: Any
) -> list[float]:
    """What each micro-batch's token-mean loss is multiplied by so that the optimizer step follows
    the mean over every response token of the global minibatch, however it is split across
    processes and micro-batches: ``tokens(micro) · N / tokens(global minibatch)`` (the gradient
    all-reduce then averages over the N processes). 1.0 exactly for one process, one micro-batch.
    ``rows``: this process's minibatch (indices into ``mask`` (B, R))."""
    starts = range(0, len(rows), micro_batch)
    counts = [float(mask[rows[s : s + micro_batch]].sum()) for s in starts]
    n, total = accelerator.num_processes, sum(counts)
    if n > 1:
        total = float(accelerator.reduce(torch.tensor(total, device=accelerator.device), "sum"))
    if total <= 0:
        return [1.0 / len(counts)] * len(counts)
    return [c * n / total for c in counts]


def ppo_epochs(
    model: Any, optimizer: Any, accelerator: Any, batch: Batch, cfg: PPOConfig, beta: float,
    value_scale: float, mini_batch: int, micro_batch: int, update: int,
) -> tuple[dict[str, torch.Tensor], int]:  # fmt: skip
    """``cfg.num_ppo_epochs`` passes over ``batch``, reshuffled each time, in minibatches of
    ``mini_batch`` rows (one optimizer step each) made of micro-batches of ``micro_batch`` rows
    (gradient accumulation). Each micro-batch's loss is :func:`rlhfkit.losses.ppo_loss`, weighted
    by its share of the minibatch's response tokens on all processes (:func:`token_shares`), so a
    step's gradient and logged losses are token means over the global minibatch;
    ``value_scale`` puts values and returns in the units the value loss is computed in. A
    non-finite loss or gradient skips that optimizer step on every process (counted, warned).
    Returns the mean stats over all micro-batches and the number of steps skipped (its ``val/*``
    variances are means of each micro-batch's)."""
    acc, roll = accelerator, batch.roll
    b_values, b_returns = batch.b_values * value_scale, batch.b_returns * value_scale
    mask = roll.response_mask
    R, B = mask.shape[1], mask.shape[0]
    sums: dict[str, float] = {}
    count = skipped = 0
    params = [p for p in model.parameters() if p.requires_grad]
    sharded = is_sharded(model)
    for _epoch in range(cfg.num_ppo_epochs):
        perm = torch.randperm(B, device=acc.device)  # shuffled every epoch
        for mb_start in range(0, B, mini_batch):
            mb = perm[mb_start : mb_start + mini_batch]
            shares = token_shares(mask, mb, micro_batch, acc)
            loss_finite = True
            for k, mc_start in enumerate(range(0, mini_batch, micro_batch)):
                idx = mb[mc_start : mc_start + micro_batch]
                last_micro = k == cfg.gradient_accumulation_steps - 1
                with contextlib.nullcontext() if last_micro else acc.no_sync(model):
                    hidden = None if batch.critic_hidden is None else batch.critic_hidden[idx]
                    logits, values = model(
                        roll.query_responses[idx], roll.attention_mask[idx],
                        roll.position_ids[idx], keep=R + 1, critic_hidden=hidden,
                    )  # fmt: skip
                    logits = logits[:, :-1]  # (b, R, V)
                    new_logprobs = logprobs_from_logits(
                        logits, roll.responses[idx], cfg.temperature
                    )  # (b, R)
                    with torch.no_grad() if cfg.entropy_coef <= 0 else contextlib.nullcontext():
                        entropy = entropy_from_logits(logits, cfg.temperature)  # (b, R)
                    loss, stats = ppo_loss(
                        new_logprobs, batch.b_logprobs[idx], batch.b_advantages[idx],
                        values[:, :-1].float() * value_scale, b_values[idx], b_returns[idx],
                        mask[idx], entropy, clip_range=cfg.cliprange,
                        clip_range_value=cfg.cliprange_value, vf_coef=cfg.vf_coef,
                        entropy_coef=cfg.entropy_coef, beta=beta, kl_kind=cfg.kl_estimator,
                        ref_logprobs=batch.b_ref_logprobs[idx] if cfg.kl_in_loss else None,
                    )  # fmt: skip
                    if inject_nan("loss", update):
                        loss = loss * float("nan")
                    loss_finite &= bool(torch.isfinite(loss))
                    # backward even on a non-finite loss: every process must take part in the
                    # gradient all-reduce; the step is skipped below.
                    acc.backward(loss if shares[k] == 1.0 else loss * shares[k])
                # token-weighted like the loss (mean over micro-batches · accumulation steps)
                weight = shares[k] * cfg.gradient_accumulation_steps
                for key, val in stats.items():
                    w = 1.0 if key.endswith("_var") else weight
                    sums[key] = sums.get(key, 0.0) + float(val) * w
                count += 1
            # Gradients are all-reduced, so the norm is the same on every process and they all
            # agree to skip; the local loss flag is combined for the same reason.
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
            clip = clip_grad_norm if sharded else acc.clip_grad_norm_
            grad_norm = clip(params, max_norm)
            bad = acc.reduce(torch.tensor(float(not loss_finite), device=acc.device), "max")
            if bad.item() > 0 or not torch.isfinite(torch.as_tensor(grad_norm)):
                skipped += 1
                warnings.warn(
                    f"update {update}: non-finite loss or gradient; optimizer step skipped",
                    stacklevel=3,
                )
            else:
                optimizer.step()
                kill_point("update", update)  # crash tests: weights changed, unsaved
            optimizer.zero_grad(set_to_none=True)
    means = {k: torch.tensor(v / max(count, 1)) for k, v in sums.items() if math.isfinite(v)}
    return means, skipped
