"""Gao et al.'s over-optimization fits, best-of-n's KL and curve (hacking/overoptimization.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhfkit.hacking.overoptimization import (
    LiveGaoFit,
    best_of_n_curve,
    fit_gao,
    kl_best_of_n,
)


def test_kl_of_best_of_n():
    assert kl_best_of_n(1) == 0.0
    assert kl_best_of_n(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_best_of_n(64) == pytest.approx(math.log(64) - 63 / 64)
    with pytest.raises(ValueError):
        kl_best_of_n(0)


@pytest.mark.parametrize("form, alpha, beta", [("bon", 1.2, 0.4), ("rl", 0.8, 0.5)])
def test_fits_recover_known_coefficients_and_the_peak(form, alpha, beta):
    rng = np.random.default_rng(0)
    d = np.linspace(0.2, 4.0, 40)
    true = d * (alpha - beta * d) if form == "bon" else d * (alpha - beta * np.log(d))
    fit = fit_gao(d, true + rng.normal(0, 0.01, d.size), form)
    assert fit.alpha == pytest.approx(alpha, abs=0.02) and fit.beta == pytest.approx(beta, abs=0.02)
    assert fit.alpha_ci[0] < alpha < fit.alpha_ci[1] and fit.beta_ci[0] < beta < fit.beta_ci[1]
    peak = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
    assert fit.peak_d == pytest.approx(peak, rel=0.05) and fit.peak_kl == pytest.approx(
        peak**2, rel=0.1
    )
    # the peak is where the fitted curve is highest
    grid = np.linspace(0.01, 2 * peak, 2001)
    assert grid[fit.predict(grid).argmax()] == pytest.approx(peak, rel=0.01)
    assert fit.r2 > 0.99


def test_no_turn_no_peak_and_too_few_points():
    d = np.linspace(0.5, 3, 10)
    assert fit_gao(d, 0.7 * d, "bon").peak_d is None  # a straight line never turns down
    assert fit_gao([1.0, 2.0], [0.5, 0.8], "rl") is None


def test_best_of_n_curve_takes_the_best_of_the_first_n():
    proxy = np.array([[0.0, 2.0, 1.0, 3.0], [5.0, 1.0, 1.0, 0.0]])
    gold = np.array([[1.0, -1.0, 0.0, -2.0], [0.5, 0.0, 0.0, 0.0]])
    pts = best_of_n_curve(proxy, gold, [1, 2, 4])
    assert [p.proxy for p in pts] == [2.5, 3.5, 4.0]  # row 0 picks 0, 1, 3; row 1 always 0
    assert [p.gold for p in pts] == [0.75, -0.25, -0.75]
    assert pts[0].kl == 0.0
    with pytest.raises(ValueError, match="needs 8 samples"):
        best_of_n_curve(proxy, gold, [8])


def test_the_live_fit_warns_once_past_the_peak():
    live = LiveGaoFit(min_points=6)
    warnings = []
    for d in np.linspace(0.3, 6.0, 30):  # gold gain d(1 − 0.5 log d) peaks at d = e
        _, w = live.add(d**2, 1.0 + d * (1.0 - 0.5 * math.log(d)))
        warnings.append(w)
    said = [w for w in warnings if w]
    assert len(said) == 1 and "past its fitted peak" in said[0]
    first = next(i for i, w in enumerate(warnings) if w)
    assert np.linspace(0.3, 6.0, 30)[first] > math.e
