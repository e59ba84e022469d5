"""Every formula of RLHF, as pure functions that read like the papers.

1. Reward model: Bradley-Terry over pairs, and its ranking-native form over K responses
   (InstructGPT): :func:`bradley_terry_loss`, :func:`ranking_loss`, :func:`grouped_ranking_loss`.
2. The reward PPO maximizes: an ensemble's combined score (:func:`ensemble_reward`), KL
   estimators (:func:`kl_estimate`), ``r − β·KL`` (:func:`kl_penalized_reward`) and its per-token
   form (:func:`per_token_rewards`).
3. Advantages: generalized advantage estimation (:func:`gae`).
4. The PPO update: the clipped surrogate (:func:`ppo_clip_objective`, :func:`policy_loss`), the
   clipped value loss (:func:`value_loss`), and the whole minibatch loss with its named terms
   (:func:`ppo_loss`).

Tensors in, ``(loss, stats)`` out where a trainer logs the stats (the core formulas return the
plain tensor). ``mask`` is 1 for response tokens that count, 0 for padding and
everything after the stop token. Shapes: B rows, R response tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhfkit.ops import masked_mean


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Mean of ``−log σ(r(y_w) − r(y_l) − margin)`` over pairs.

    Bradley & Terry (1952) as used for reward models by Stiennon et al. 2020 and Ouyang et al. 2022;
    the optional margin is Llama 2's (and TRL's ``margin`` column). chosen, rejected: (P,).
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def _ordered_pairs(ranks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (winner, loser) of every pair with ``ranks[w] < ranks[l]`` (1 = best; ties skipped)."""
    better = ranks.unsqueeze(1) < ranks.unsqueeze(0)  # (K, K): [i, j] = i beats j
    return better.nonzero(as_tuple=True)


def ranking_loss(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss of one prompt's K ranked responses, each scored once.

    rewards: (K,) scores; ranks: (K,) ints, 1 = best, equal ranks are ties. The loss is the mean of
    ``−log σ(r_w − r_l)`` over all strictly ordered pairs — K(K−1)/2 without ties — exactly as
    InstructGPT (Ouyang et al. 2022, eq. 1) trains on all comparisons of a prompt as one element.
    Equal to ``bradley_terry_loss`` on the pairwise-expanded data, with K forwards instead of K(K−1).
    """
    winners, losers = _ordered_pairs(ranks)
    if winners.numel() == 0:
        raise ValueError("ranking has no strictly ordered pair (all responses tied)")
    return bradley_terry_loss(rewards[winners], rewards[losers])


def grouped_ranking_loss(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    ranks: torch.Tensor,
    margins: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    weight_total: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``ranking_loss`` for a batch of prompts whose responses are concatenated.

    rewards, group_ids, ranks: (N,) — response n belongs to prompt ``group_ids[n]`` (ints in
    0..G−1) and has rank ``ranks[n]`` within it (1 = best, equal = tie). margins: optional (G,)
    margin subtracted from every pair of that prompt. Each prompt weighs the same whatever its K
    (InstructGPT normalises by K choose 2): the loss is the mean over prompts of each prompt's mean
    pair loss; a prompt with no ordered pair is left out.

    weights: optional (G,) non-negative weight per prompt (its annotator's reliability, say). The
    loss is then the weighted mean ``Σ_g w_g ℓ_g / Σ_g w_g`` of the per-prompt losses ℓ_g: weight 0
    adds nothing to the gradient, weight 2 counts as two copies of the prompt. ``weight_total``
    replaces the denominator ``Σ_g w_g``: a trainer that splits one batch into micro-batches passes
    the whole batch's weight, so that the parts add up to the batch's weighted mean. A zero total
    gives a loss of 0 (and a zero gradient). Returns ``(loss, stats)``, stats holding
    per-pair ``accuracy`` (r_w > r_l strictly), ``margin`` (mean r_w − r_l) and ``pairs``.
    """
    same = group_ids.unsqueeze(1) == group_ids.unsqueeze(0)  # (N, N)
    better = (ranks.unsqueeze(1) < ranks.unsqueeze(0)) & same  # (N, N): [i, j] = i beats j
    winners, losers = better.nonzero(as_tuple=True)  # (P,), (P,)
    if winners.numel() == 0:
        raise ValueError("batch has no strictly ordered pair (every prompt's responses tied)")
    diff = rewards[winners] - rewards[losers]  # (P,)
    pair_group = group_ids[winners]  # (P,)
    shifted = diff if margins is None else diff - margins.to(diff.dtype)[pair_group]
    pair_losses = -F.logsigmoid(shifted)  # (P,)
    n_groups = int(group_ids.max()) + 1
    zeros = torch.zeros(n_groups, dtype=diff.dtype, device=diff.device)
    group_sum = zeros.index_add(0, pair_group, pair_losses)  # (G,)
    group_cnt = zeros.index_add(0, pair_group, torch.ones_like(pair_losses))  # (G,)
    has_pairs = group_cnt > 0
    group_loss = group_sum[has_pairs] / group_cnt[has_pairs]  # (G',)
    if weights is None:
        loss = group_loss.mean()
    else:
        w = weights.to(diff.dtype)[has_pairs]  # (G',)
        total = (
            w.sum()
            if weight_total is None
            else torch.as_tensor(weight_total, dtype=w.dtype, device=w.device)
        )
        # Σ w ℓ is exactly 0 when every weight is: dividing by a clamped total keeps it 0, not NaN.
        loss = (w * group_loss).sum() / total.clamp_min(torch.finfo(w.dtype).tiny)
    stats = {
        "accuracy": (diff.detach() > 0).float().mean(),
        "margin": diff.detach().mean(),
        "pairs": torch.tensor(float(diff.numel())),
    }
    return loss, stats


def kl_penalized_reward(reward, kl, beta):
    """``reward − β·KL``: the quantity PPO maximizes in RLHF (Ziegler et al. 2019; Ouyang et al. 2022).

    Works on floats and tensors: ``kl_penalized_reward(2.5, 3.0, 0.1) == 2.2``.
    """
    return reward - beta * kl


ENSEMBLE_OBJECTIVES = ("mean", "worst", "uwo")


def ensemble_reward(
    member_scores: torch.Tensor, objective: str = "mean", uwo_lambda: float = 1.0
) -> torch.Tensor:
    """One reward from an ensemble's M members, each normalized to the same scale:
    member_scores (M, N) -> (N,). Coste et al. 2023 ("Reward Model Ensembles Help Mitigate
    Overoptimization"):

    - ``mean``: ``(1/M) Σ_m r_m``;
    - ``worst`` (worst-case optimization): ``min_m r_m``;
    - ``uwo`` (uncertainty-weighted optimization): ``mean − λ·Var_m(r_m)``, the members'
      variance (population, over m) as the penalty for disagreement.
    """
    if objective == "mean":
        return member_scores.mean(0)
    if objective == "worst":
        return member_scores.min(0).values
    if objective == "uwo":
        return member_scores.mean(0) - uwo_lambda * member_scores.var(0, unbiased=False)
    raise ValueError(f"ensemble objective must be one of {', '.join(ENSEMBLE_OBJECTIVES)}")


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(policy ‖ reference) from tokens sampled by the policy.

    With ``log ρ = logprobs - ref_logprobs`` (J. Schulman, "Approximating KL divergence", 2020):

    - ``k1 = log ρ`` — unbiased, high variance, *negative for individual tokens* (normal!);
    - ``k2 = (log ρ)² / 2`` — biased, low variance, always ≥ 0;
    - ``k3 = exp(-log ρ) - 1 + log ρ`` — unbiased, low variance, always ≥ 0.
    """
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be 'k1', 'k2' or 'k3', got {kind!r}")


def per_token_rewards(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kl_in_reward: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reward of every response token: ``r_t − β·KL_t``, where ``r_t`` is the reward model's
    score at the last real token and 0 elsewhere (Ziegler et al. 2019; Stiennon et al. 2020).

    scores: (B,), kl: (B, R) per-token estimates (0 off the mask), mask: (B, R). Summed over a
    response this is :func:`kl_penalized_reward` of its score and its KL. ``kl_in_reward=False``
    leaves the KL out (it is then a loss term, see :func:`ppo_loss`). Returns ``(rewards (B, R),
    stats)`` with ``non_score_reward``: ``−β·KL`` summed per response (B,).
    """
    last = (mask.sum(1) - 1).long()  # (B,) index of the last real token
    score_at_end = torch.zeros_like(kl)  # (B, R)
    score_at_end[torch.arange(kl.shape[0], device=kl.device), last] = scores.to(kl.dtype)
    rewards = kl_penalized_reward(score_at_end, kl, beta) if kl_in_reward else score_at_end
    return rewards, {"non_score_reward": (-beta * kl).sum(1)}


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016), over (B, T) response tokens.

    ``δ_t = r_t + γ·V_{t+1} − V_t``, ``A_t = δ_t + γλ·A_{t+1}``, ``returns = A + V``.
    Rewards and values are zeroed where ``mask`` is 0 (after EOS), so the episode ends at the last
    real token: nothing after it leaks back. Returns ``(advantages, returns)``, both zero off-mask.
    """
    mask = mask.to(values.dtype)
    rewards = rewards * mask
    values = values * mask
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[..., 0])  # (B,)
    for t in reversed(range(T)):
        next_value = values[..., t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        # a masked position passes the future advantage through untouched only if it is not
        # padding *inside* the response; responses are right-padded, so after-EOS positions are 0.
        last = (delta + gamma * lam * last) * mask[..., t]
        advantages[..., t] = last
    returns = advantages + values
    return advantages, returns * mask


def _clip_terms(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log ρ``, ``ρ``, ``ρ·A`` and ``clip(ρ, 1−ε, 1+ε)·A``, each (B, R)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    return log_ratio, ratio, ratio * advantages, clipped


def ppo_clip_objective(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float = 0.2,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """PPO's clipped surrogate objective, to be *maximized* (Schulman et al. 2017, eq. 7):

    ``L = E[min(ρ·A, clip(ρ, 1−ε, 1+ε)·A)]``, ``ρ = exp(logprobs − old_logprobs)``,

    a masked mean over response tokens. The policy loss is ``−L``. Where the clipped term is the
    smaller one, its gradient with respect to ``logprobs`` is zero: the update stops pushing ρ
    further outside the trust region.
    """
    _, _, surrogate, clipped = _clip_terms(logprobs, old_logprobs, advantages, clip_range)
    objective = torch.minimum(surrogate, clipped)
    if mask is None:
        return objective.mean()
    return masked_mean(objective, mask)


@torch.no_grad()
def ppo_clip_stats(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float = 0.2,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Diagnostics of one PPO minibatch (CleanRL's names):

    - ``clipfrac``: share of tokens whose clipped term was the active (smaller) one;
    - ``approxkl``: ``E[(ρ − 1) − log ρ]`` (k3 of old vs new policy, ≥ 0);
    - ``ratio_mean`` / ``ratio_var``: ρ's mean and variance — ρ near 1 means small, healthy updates.
    """
    if mask is None:
        mask = torch.ones_like(logprobs)
    log_ratio, ratio, surrogate, clipped = _clip_terms(
        logprobs, old_logprobs, advantages, clip_range
    )
    clipfrac = masked_mean((clipped < surrogate).float(), mask)
    approxkl = masked_mean((ratio - 1.0) - log_ratio, mask)
    ratio_mean = masked_mean(ratio, mask)
    ratio_var = masked_mean((ratio - ratio_mean) ** 2, mask)
    return {
        "clipfrac": clipfrac,
        "approxkl": approxkl,
        "ratio_mean": ratio_mean,
        "ratio_var": ratio_var,
    }


def _value_terms(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V − R)²`` and ``(V_clip − R)²`` with ``V_clip = V_old + clip(V − V_old, −ε, ε)``."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    return (values - returns) ** 2, (clipped_values - returns) ** 2


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float = 0.2,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clipped value loss ``0.5·E[max((V − R)², (V_clip − R)²)]``,
    ``V_clip = V_old + clip(V − V_old, −ε, ε)`` (OpenAI baselines' PPO2; lm-human-preferences).
    """
    unclipped, clipped = _value_terms(values, old_values, returns, clip_range)
    loss = torch.maximum(unclipped, clipped)
    if mask is None:
        return 0.5 * loss.mean()
    return 0.5 * masked_mean(loss, mask)


@torch.no_grad()
def value_clipfrac(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float = 0.2,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Share of tokens where the clipped value term was the larger (active) one."""
    unclipped, clipped = _value_terms(values, old_values, returns, clip_range)
    active = (clipped > unclipped).float()
    return active.mean() if mask is None else masked_mean(active, mask)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float = 0.2,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The policy's loss, ``−`` :func:`ppo_clip_objective`, with :func:`ppo_clip_stats`."""
    loss = -ppo_clip_objective(logprobs, old_logprobs, advantages, clip_range, mask)
    return loss, ppo_clip_stats(logprobs.detach(), old_logprobs, advantages, clip_range, mask)


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    entropy: torch.Tensor,
    *,
    clip_range: float = 0.2,
    clip_range_value: float = 0.2,
    vf_coef: float = 0.1,
    entropy_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_kind: str = "k1",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One minibatch's PPO loss, term by term (CleanRL's layout):

    ``loss = pg_loss + vf_coef·v_loss − entropy_coef·entropy [+ β·KL]``

    - ``pg_loss``: the clipped surrogate, negated (:func:`policy_loss`);
    - ``v_loss``: the clipped value loss (:func:`value_loss`);
    - ``entropy``: the masked mean of the per-token ``entropy`` (B, R), a bonus when
      ``entropy_coef > 0`` (pass it without gradient otherwise: it is then only logged);
    - ``β·KL``: with ``ref_logprobs`` given, the KL to the reference as a loss term (token mean,
      ``kl_kind`` estimator) instead of in the reward (GRPO; OpenRLHF's ``use_kl_loss``).

    logprobs, old_logprobs, advantages, values, old_values, returns, mask: (B, R). Returns the
    loss and the stats the trainer logs (``policy/*``, ``val/*``, ``loss/*``).
    """
    pg_loss, clip = policy_loss(logprobs, old_logprobs, advantages, clip_range, mask)
    v_loss = value_loss(values, old_values, returns, clip_range_value, mask)
    loss = pg_loss + vf_coef * v_loss
    entropy_mean = masked_mean(entropy, mask)
    if entropy_coef > 0:
        loss = loss - entropy_coef * entropy_mean
    if ref_logprobs is not None:
        loss = loss + beta * masked_mean(kl_estimate(logprobs, ref_logprobs, kl_kind), mask)
    stats = {
        "policy/approxkl": clip["approxkl"],
        "policy/clipfrac": clip["clipfrac"],
        "policy/entropy": entropy_mean.detach(),
        "val/ratio": clip["ratio_mean"],
        "val/ratio_var": clip["ratio_var"],
        "val/clipfrac": value_clipfrac(
            values.detach(), old_values, returns, clip_range_value, mask
        ),
        "loss/policy": pg_loss.detach(),
        "loss/value": v_loss.detach(),
    }
    return loss, stats
