"""Hand cases and plain-loop oracles for rlhfkit.ops."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhfkit.ops import (
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
)


def test_masked_mean_hand():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert torch.allclose(masked_mean(x, m, dim=1), torch.tensor([1.5, 3.0]))


def test_masked_mean_empty_mask_is_zero_not_nan():
    assert masked_mean(torch.ones(3), torch.zeros(3)).item() == 0.0


def test_masked_var_matches_torch_var_on_selected():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    m = torch.rand(4, 6, generator=g) > 0.4
    assert masked_var(x, m).item() == pytest.approx(x[m].var().item(), rel=1e-9)
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(
        x[m].var(unbiased=False).item(), rel=1e-9
    )


def test_masked_whiten_statistics_under_mask():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3 + 2
    m = torch.rand(5, 7, generator=g) > 0.3
    w = masked_whiten(x, m)
    assert w[m].mean().item() == pytest.approx(0.0, abs=1e-9)
    assert w[m].std().item() == pytest.approx(1.0, rel=1e-6)
    assert torch.all(w[~m] == 0)
    w2 = masked_whiten(x, m, shift_mean=False)
    assert w2[m].mean().item() == pytest.approx(x[m].mean().item(), rel=1e-6)
    assert w2[m].std().item() == pytest.approx(1.0, rel=1e-6)


def test_logprobs_from_logits_oracle_and_temperature():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, 6, (2, 4), generator=g)
    for temp in (1.0, 0.7):
        got = logprobs_from_logits(logits, tokens, temp)
        for b in range(2):
            for t in range(4):
                row = logits[b, t] / temp
                expected = row[tokens[b, t]].item() - math.log(
                    sum(math.exp(v) for v in row.tolist())
                )
                assert got[b, t].item() == pytest.approx(expected, rel=1e-5)


def test_entropy_from_logits():
    logits = torch.zeros(1, 1, 4)
    assert entropy_from_logits(logits).item() == pytest.approx(math.log(4), rel=1e-6)
    peaked = torch.tensor([[[100.0, 0.0, 0.0]]])
    assert entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_estimators_hand():
    lp = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    log_ratio = math.log(2.0)
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(log_ratio)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5 * log_ratio**2)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + log_ratio)
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(lp, ref, "k4")


def test_kl_estimators_agree_in_expectation_and_k3_nonnegative():
    # policy p, reference q over 3 tokens; sample from p; k1 and k3 are unbiased for KL(p||q)
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    true_kl = (p * (p / q).log()).sum().item()
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(p, 200_000, replacement=True, generator=g)
    lp, lq = p.log()[idx], q.log()[idx]
    assert kl_estimate(lp, lq, "k1").mean().item() == pytest.approx(true_kl, rel=0.02)
    k3 = kl_estimate(lp, lq, "k3")
    assert k3.mean().item() == pytest.approx(true_kl, rel=0.02)
    assert (k3 >= 0).all()
    assert (kl_estimate(lp, lq, "k1") < 0).any()  # per-sample k1 can be negative: that is normal


def _gae_oracle(rewards, values, mask, gamma, lam):
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        length = int(sum(mask[b]))  # right-padded
        last = 0.0
        for t in reversed(range(length)):
            nv = values[b][t + 1] if t + 1 < length else 0.0
            delta = rewards[b][t] + gamma * nv - values[b][t]
            last = delta + gamma * lam * last
            adv[b][t] = last
    return adv


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000),
    st.floats(min_value=0.5, max_value=1.0),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_gae_matches_loop_oracle(seed, gamma, lam):
    g = torch.Generator().manual_seed(seed)
    B, T = 3, 6
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).double()
    adv, ret = gae(rewards, values, mask, gamma, lam)
    oracle = _gae_oracle(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    assert torch.allclose(adv, torch.tensor(oracle, dtype=torch.float64))
    assert torch.allclose(ret, (adv + values) * mask)
    assert torch.all(adv[mask == 0] == 0)


def test_gae_hand_single_reward_at_end():
    # γ=1, λ=1, V=0: every advantage equals the final reward (Monte Carlo return)
    rewards = torch.tensor([[0.0, 0.0, 2.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, _ = gae(rewards, torch.zeros(1, 4), mask, 1.0, 1.0)
    assert adv.tolist() == [[2.0, 2.0, 2.0, 0.0]]


def test_explained_variance():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.ones(4)
    assert explained_variance(target, target, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), target, mask).item() == pytest.approx(0.0)
