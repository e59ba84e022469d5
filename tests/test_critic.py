"""The value head's running return statistics (PPOConfig.value_norm)."""

from __future__ import annotations

import torch

from rlhfkit.critic import ActorCritic, ValueHead


def _stats(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.square().mean())


def test_first_batch_sets_the_statistics_and_values_do_not_move():
    torch.manual_seed(0)
    head = ValueHead(8)
    with torch.no_grad():
        head.linear.weight.normal_()
        head.linear.bias.fill_(0.3)
    hidden = torch.randn(4, 6, 8)
    before = head(hidden)
    returns = 20 + 5 * torch.randn(1000)
    head.update_return_stats(*_stats(returns), decay=0.9)
    # Debiased: the first batch counts fully, whatever the decay.
    assert abs(float(head.return_mean) - float(returns.mean())) < 1e-4
    assert abs(float(head.return_std) - float(returns.std(unbiased=False))) < 1e-3
    torch.testing.assert_close(head(hidden), before, atol=1e-4, rtol=1e-5)


def test_later_batches_move_the_statistics_by_the_decay():
    head = ValueHead(4)
    head.update_return_stats(mean=0.0, sq_mean=1.0, decay=0.5)
    head.update_return_stats(mean=3.0, sq_mean=9.0 + 4.0, decay=0.5)  # a batch with mean 3, std 2
    # weights: 0.5·0.5 = 0.25 for the first batch, 0.5 for the second; normalised by 0.75
    mean = (0.25 * 0.0 + 0.5 * 3.0) / 0.75
    sq = (0.25 * 1.0 + 0.5 * 13.0) / 0.75
    assert abs(float(head.return_mean) - mean) < 1e-5
    assert abs(float(head.return_std) - (sq - mean**2) ** 0.5) < 1e-5


def test_a_constant_batch_does_not_divide_by_zero():
    head = ValueHead(4)
    hidden = torch.randn(2, 3, 4)
    head.update_return_stats(mean=5.0, sq_mean=25.0, decay=0.9)
    assert float(head.return_std) > 0
    assert torch.isfinite(head(hidden)).all()
    torch.testing.assert_close(head(hidden), torch.zeros(2, 3), atol=1e-3, rtol=0)  # preserved


def test_statistics_are_saved_and_older_critic_checkpoints_still_load():
    head = ValueHead(4)
    head.update_return_stats(mean=2.0, sq_mean=8.0, decay=0.9)
    model = ActorCritic(torch.nn.Identity(), head, None)
    state = model.critic_state_dict()
    assert {"value_head.return_mean", "value_head.return_std"} <= set(state)

    fresh = ActorCritic(torch.nn.Identity(), ValueHead(4), None)
    fresh.load_critic_state_dict(state)
    assert float(fresh.value_head.return_std) == float(head.return_std)

    # A checkpoint from before value_norm: only the linear layer. Its values were unscaled.
    old = {k: v for k, v in state.items() if k.startswith("value_head.linear.")}
    older = ActorCritic(torch.nn.Identity(), ValueHead(4), None)
    older.load_critic_state_dict(old)
    assert float(older.value_head.return_std) == 1.0 and float(older.value_head.return_mean) == 0


def test_a_head_that_also_reads_the_policy_keeps_its_values_when_the_statistics_move():
    torch.manual_seed(1)
    head = ValueHead(8, policy_hidden_size=6)
    with torch.no_grad():
        for layer in (head.linear, head.policy_linear):
            layer.weight.normal_()
            layer.bias.fill_(0.2)
    hidden, policy_hidden = torch.randn(3, 5, 8), torch.randn(3, 5, 6)
    before = head(hidden, policy_hidden)
    for mean, std in ((20.0, 5.0), (3.0, 0.5)):
        head.update_return_stats(mean, mean**2 + std**2, decay=0.9)
        torch.testing.assert_close(head(hidden, policy_hidden), before, atol=1e-4, rtol=1e-5)
    # both layers count: the policy part alone moves the values
    with torch.no_grad():
        head.policy_linear.bias.add_(1.0)
    assert not torch.allclose(head(hidden, policy_hidden), before)
    try:
        head(hidden)
    except ValueError as e:
        assert "policy's hidden states" in str(e)
    else:
        raise AssertionError("a head that reads the policy needs its hidden states")
