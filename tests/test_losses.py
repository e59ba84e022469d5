"""Hand-computed cases, plain-loop oracles and gradient checks for rlhfkit.losses."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.losses import (
    bradley_terry_loss,
    grouped_ranking_loss,
    kl_penalized_reward,
    ppo_clip_objective,
    ppo_clip_stats,
    ranking_loss,
    value_clipfrac,
    value_loss,
)


def _nls(x: float) -> float:
    """-log sigmoid(x), by hand."""
    return math.log1p(math.exp(-x))


# --- Bradley-Terry -------------------------------------------------------------------------------


def test_bradley_terry_hand_computed():
    chosen = torch.tensor([2.0, 0.5])
    rejected = torch.tensor([1.0, 1.5])
    expected = (_nls(1.0) + _nls(-1.0)) / 2
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_equal_scores_is_log2():
    x = torch.zeros(5)
    assert bradley_terry_loss(x, x).item() == pytest.approx(math.log(2), rel=1e-6)


def test_bradley_terry_margin_shifts_the_difference():
    chosen, rejected = torch.tensor([3.0]), torch.tensor([1.0])
    assert bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.5])).item() == pytest.approx(
        _nls(0.5), rel=1e-6
    )
    assert bradley_terry_loss(chosen, rejected, margin=1.5).item() == pytest.approx(
        _nls(0.5), rel=1e-6
    )


def test_bradley_terry_gradient_pushes_chosen_up_rejected_down():
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert chosen.grad.item() == pytest.approx(-0.5)
    assert rejected.grad.item() == pytest.approx(0.5)


# --- Exercise 1: ranking A > B > C needs 3 terms --------------------------------------------------


def test_seed_exercise_1_three_pairwise_terms():
    # A ranked 1st, B 2nd, C 3rd: terms (A,B), (A,C), (B,C) = K(K-1)/2 = 3
    r_a, r_b, r_c = 1.2, 0.3, -0.8
    rewards = torch.tensor([r_a, r_b, r_c])
    ranks = torch.tensor([1, 2, 3])
    expected = (_nls(r_a - r_b) + _nls(r_a - r_c) + _nls(r_b - r_c)) / 3
    assert ranking_loss(rewards, ranks).item() == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_ties_are_not_pairs():
    rewards = torch.tensor([1.0, 0.0, 0.5, -1.0])
    ranks = torch.tensor([1, 2, 2, 3])  # b and c tied
    pairs = [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]  # 6 - 1 tied pair
    expected = sum(_nls(rewards[w].item() - rewards[l].item()) for w, l in pairs) / len(pairs)
    assert ranking_loss(rewards, ranks).item() == pytest.approx(expected, rel=1e-6)


def test_ranking_loss_all_tied_is_an_error():
    with pytest.raises(ValueError, match="tied"):
        ranking_loss(torch.zeros(3), torch.tensor([1, 1, 1]))


def _expanded_pairs_loss(rewards, ranks):
    """Plain-loop oracle: expand the ranking into pairs, as TRL's data would be."""
    chosen, rejected = [], []
    for i in range(len(ranks)):
        for j in range(len(ranks)):
            if ranks[i] < ranks[j]:
                chosen.append(rewards[i])
                rejected.append(rewards[j])
    return bradley_terry_loss(torch.stack(chosen), torch.stack(rejected))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=4), min_size=2, max_size=7).filter(
        lambda r: len(set(r)) > 1
    ),
    st.integers(min_value=0, max_value=10_000),
)
def test_ranking_loss_equals_pairwise_expansion(ranks, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(len(ranks), generator=g, dtype=torch.float64)
    ranks_t = torch.tensor(ranks)
    assert torch.allclose(ranking_loss(rewards, ranks_t), _expanded_pairs_loss(rewards, ranks))


def test_grouped_ranking_loss_is_mean_of_per_prompt_losses():
    rewards = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5, 0.3, -0.2, 0.1, 0.9], dtype=torch.float64)
    group_ids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    ranks = torch.tensor([1, 2, 3, 2, 1, 3, 3, 2, 1])
    loss, stats = grouped_ranking_loss(rewards, group_ids, ranks)
    per_prompt = [ranking_loss(rewards[group_ids == g], ranks[group_ids == g]) for g in range(3)]
    assert loss.item() == pytest.approx(torch.stack(per_prompt).mean().item(), rel=1e-9)
    # pairs: 3 + (6 - 1 tie) + 1 = 9
    assert stats["pairs"].item() == 9
    # accuracy by hand: group0 all 3 correct; group1: b (rank 1, r=0.5) vs a (rank 2, r=2.0) is
    # wrong, the other 4 right; group2: 0.9 > 0.1 right -> 8/9
    assert stats["accuracy"].item() == pytest.approx(8 / 9)


def test_grouped_ranking_loss_never_pairs_across_prompts():
    rewards = torch.tensor([0.0, 5.0, 0.0, 5.0])
    group_ids = torch.tensor([0, 0, 1, 1])
    ranks = torch.tensor([1, 2, 1, 2])
    loss, stats = grouped_ranking_loss(rewards, group_ids, ranks)
    assert stats["pairs"].item() == 2
    assert loss.item() == pytest.approx(_nls(-5.0), rel=1e-6)


def test_grouped_ranking_loss_with_margins():
    rewards = torch.tensor([2.0, 1.0, 3.0, 0.0])
    group_ids = torch.tensor([0, 0, 1, 1])
    ranks = torch.tensor([1, 2, 1, 2])
    margins = torch.tensor([0.5, 1.0])
    loss, _ = grouped_ranking_loss(rewards, group_ids, ranks, margins)
    assert loss.item() == pytest.approx((_nls(0.5) + _nls(2.0)) / 2, rel=1e-6)


def test_grouped_ranking_loss_equal_k_equals_expanded_pairs():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(12, generator=g, dtype=torch.float64)
    group_ids = torch.arange(3).repeat_interleave(4)
    ranks = torch.tensor([1, 2, 3, 4, 2, 1, 4, 3, 4, 3, 2, 1])
    loss, _ = grouped_ranking_loss(rewards, group_ids, ranks)
    chosen, rejected = [], []
    for gid in range(3):
        idx = (group_ids == gid).nonzero().flatten().tolist()
        for i in idx:
            for j in idx:
                if ranks[i] < ranks[j]:
                    chosen.append(rewards[i])
                    rejected.append(rewards[j])
    assert torch.allclose(loss, bradley_terry_loss(torch.stack(chosen), torch.stack(rejected)))


# --- Exercise 2 ----------------------------------------------------------------------------------


def test_seed_exercise_2_kl_penalized_reward():
    assert kl_penalized_reward(2.5, 3.0, 0.1) == pytest.approx(2.2)
    t = kl_penalized_reward(torch.tensor([2.5, 1.0]), torch.tensor([3.0, 0.0]), 0.1)
    assert torch.allclose(t, torch.tensor([2.2, 1.0]))


# --- Exercise 3: PPO clipped objective -------------------------------------------------------------


def _clip_oracle(logprobs, old_logprobs, advantages, eps, mask):
    total, n = 0.0, 0.0
    for lp, olp, a, m in zip(
        logprobs.flatten().tolist(),
        old_logprobs.flatten().tolist(),
        advantages.flatten().tolist(),
        mask.flatten().tolist(),
        strict=False,
    ):
        ratio = math.exp(lp - olp)
        term = min(ratio * a, min(max(ratio, 1 - eps), 1 + eps) * a)
        total += term * m
        n += m
    return total / n


def test_ppo_clip_hand_computed():
    # ratios 1.5 (A>0 → clipped to 1.2), 0.5 (A>0 → unclipped 0.5·A), 1.5 (A<0 → 1.5·A), 0.5 (A<0 → 0.8·A)
    old = torch.zeros(4)
    logprobs = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5]))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    expected = (1.2 + 0.5 - 1.5 - 0.8) / 4
    assert ppo_clip_objective(logprobs, old, adv, 0.2).item() == pytest.approx(expected, rel=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0.05, max_value=0.5))
def test_ppo_clip_matches_loop_oracle(seed, eps):
    g = torch.Generator().manual_seed(seed)
    logprobs = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.3
    old = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(3, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(3, 5, generator=g) > 0.3).double()
    mask[0, 0] = 1.0
    got = ppo_clip_objective(logprobs, old, adv, eps, mask).item()
    assert got == pytest.approx(_clip_oracle(logprobs, old, adv, eps, mask), rel=1e-9, abs=1e-12)


def test_ppo_clip_gradient_stops_outside_trust_region():
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    old = torch.zeros(4)
    logprobs = torch.log(torch.tensor([1.5, 1.1, 0.5, 0.9])).requires_grad_()
    ppo_clip_objective(logprobs, old, adv, 0.2).backward()
    g = logprobs.grad
    assert g[0].item() == 0.0  # ratio 1.5 > 1.2 with A > 0: clipped, no push further
    assert g[2].item() == 0.0  # ratio 0.5 < 0.8 with A < 0: clipped
    assert g[1].item() == pytest.approx(1.1 / 4)  # d(ρA)/dlogp = ρA, /4 for the mean
    assert g[3].item() == pytest.approx(-0.9 / 4)


def test_ppo_clip_masked_tokens_get_no_gradient():
    logprobs = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    ppo_clip_objective(logprobs, torch.zeros(2, 3), torch.ones(2, 3), 0.2, mask).backward()
    assert torch.equal(logprobs.grad == 0, mask == 0)


def test_ppo_clip_stats():
    old = torch.zeros(4)
    logprobs = torch.log(torch.tensor([1.5, 1.0, 0.5, 1.0]))
    adv = torch.tensor([1.0, 1.0, -1.0, 1.0])
    stats = ppo_clip_stats(logprobs, old, adv, 0.2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    ratio = torch.tensor([1.5, 1.0, 0.5, 1.0])
    assert stats["approxkl"].item() == pytest.approx(
        ((ratio - 1) - ratio.log()).mean().item(), rel=1e-6
    )
    assert stats["ratio_mean"].item() == pytest.approx(1.0)


# --- value loss -----------------------------------------------------------------------------------


def test_value_loss_hand_computed():
    old = torch.tensor([0.0, 0.0])
    values = torch.tensor([1.0, 0.1])
    returns = torch.tensor([0.5, 1.0])
    # token 0: unclipped (1-0.5)^2 = 0.25, clipped V=0.2 → (0.2-0.5)^2 = 0.09 → max 0.25
    # token 1: unclipped (0.1-1)^2 = 0.81, clipped 0.1 (within) → 0.81
    assert value_loss(values, old, returns, 0.2).item() == pytest.approx(0.5 * (0.25 + 0.81) / 2)


def test_value_loss_clipped_branch_takes_over_and_stops_gradient():
    old = torch.tensor([0.0])
    returns = torch.tensor([-1.0])
    values = torch.tensor([1.0], requires_grad=True)
    # unclipped (1+1)^2 = 4; clipped 0.2 → (1.2)^2 = 1.44 → max is unclipped (grad flows)
    loss = value_loss(values, old, returns, 0.2)
    loss.backward()
    assert loss.item() == pytest.approx(2.0)
    assert values.grad.item() == pytest.approx(2.0)
    values2 = torch.tensor([-0.5], requires_grad=True)
    returns2 = torch.tensor([1.0])
    # unclipped (-1.5)^2 = 2.25; clipped -0.2 → (-1.2)^2 = 1.44 → unclipped bigger again
    value_loss(values2, old, returns2, 0.2).backward()
    assert values2.grad.item() == pytest.approx(-1.5)
    # V moved past the return: unclipped (1.1-1)^2 small, clipped 0.2 → 0.64 bigger: no gradient
    values3 = torch.tensor([1.1], requires_grad=True)
    v = value_loss(values3, old, torch.tensor([1.0]), 0.2)
    v.backward()
    assert v.item() == pytest.approx(0.5 * 0.64)
    assert values3.grad.item() == 0.0
    assert value_clipfrac(values3.detach(), old, torch.tensor([1.0]), 0.2).item() == 1.0


def test_value_loss_mask():
    old = torch.zeros(2, 2)
    values = torch.tensor([[0.1, 5.0], [0.1, 0.1]])
    returns = torch.zeros(2, 2)
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert value_loss(values, old, returns, 0.2, mask).item() == pytest.approx(0.5 * 0.01)
