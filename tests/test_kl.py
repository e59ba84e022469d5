import pytest

from rlhfkit.kl import AdaptiveKLController, FixedKLController


def test_fixed_controller_never_moves():
    c = FixedKLController(0.1)
    assert c.update(100.0, 64) == 0.1
    with pytest.raises(ValueError):
        FixedKLController(-1)


def test_adaptive_controller_ziegler_formula():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    # KL 9 → err = clip(9/6 - 1, ±0.2) = 0.2; coef *= 1 + 0.2 * 64 / 10000
    c.update(9.0, 64)
    assert c.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10_000))
    # KL 5.4 → err = -0.1
    before = c.value
    c.update(5.4, 128)
    assert c.value == pytest.approx(before * (1 - 0.1 * 128 / 10_000))


def test_adaptive_controller_converges_toward_target_direction():
    c = AdaptiveKLController(0.2, target=1.0, horizon=100)
    for _ in range(50):
        c.update(0.0, 10)  # KL far below target: β shrinks
    assert c.value == pytest.approx(0.2 * (1 - 0.2 * 10 / 100) ** 50)  # err clipped at -0.2
    state = c.state_dict()
    d = AdaptiveKLController(1.0, 2.0, 5)
    d.load_state_dict(state)
    assert d.value == c.value and d.target == 1.0 and d.horizon == 100
