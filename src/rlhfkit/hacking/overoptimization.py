"""Over-optimization measured against a gold reward: Gao, Schulman & Hilton 2022, "Scaling Laws
for Reward Model Overoptimization" (arXiv 2210.10760).

With ``d = √KL(π ‖ π_init)`` (nats), the gold reward gained over the initial policy follows

- best-of-n: ``R(d) = d·(α − β·d)``, where best-of-n's KL is ``log n − (n − 1)/n``;
- RL (PPO): ``R(d) = d·(α − β·log d)``.

Both are linear in (α, β), so they are fitted by least squares with the usual standard errors and
a t confidence interval. The gold peaks where ``dR/dd = 0``: at ``d* = α/(2β)`` for best-of-n and
``d* = exp(α/β − 1)`` for RL (only when β > 0: otherwise the fitted gold never turns down). The
paper's coefficients vary with the reward model's size; it gives no universal values, so they are
fitted per run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

FORMS = ("bon", "rl")


def kl_best_of_n(n: int) -> float:
    """KL(best-of-n ‖ base) in nats: ``log n − (n − 1)/n`` (Gao et al.; Stiennon et al. 2020)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


@dataclass
class GaoFit:
    """The fitted coefficients of one functional form, with 95% confidence intervals."""

    form: str  # "bon" or "rl"
    alpha: float
    beta: float
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    r2: float
    n_points: int
    peak_d: float | None
    """``d`` where the fitted gold peaks (None unless β's whole interval is above 0: when the
    fitted gold does not surely turn down)."""
    peak_kl: float | None
    peak_gain: float | None
    """The fitted gold gain at the peak."""

    def predict(self, d: np.ndarray | float) -> np.ndarray:
        d = np.asarray(d, dtype=float)
        if self.form == "bon":
            return d * (self.alpha - self.beta * d)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(
                d > 0, d * (self.alpha - self.beta * np.log(np.maximum(d, 1e-300))), 0.0
            )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["alpha_ci"], out["beta_ci"] = list(self.alpha_ci), list(self.beta_ci)
        return out


def fit_gao(d: Sequence[float], gain: Sequence[float], form: str) -> GaoFit | None:
    """Least-squares α, β of ``form`` through the points ``(d, gain)`` (``gain``: gold reward
    minus the initial policy's; ``d = √KL``). Points with ``d ≤ 0`` carry no information (every
    form is 0 there) and are left out; fewer than 3 informative points give None."""
    from scipy import stats

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}")
    d_arr, y = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    keep = np.isfinite(d_arr) & np.isfinite(y) & (d_arr > 0)
    d_arr, y = d_arr[keep], y[keep]
    n = d_arr.size
    if n < 3:
        return None
    second = d_arr**2 if form == "bon" else d_arr * np.log(d_arr)
    X = np.stack([d_arr, -second], axis=1)  # R = α·d − β·(d² or d·log d)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    dof = n - 2
    sigma2 = float(resid @ resid) / dof if dof > 0 else 0.0
    try:
        cov = sigma2 * np.linalg.inv(X.T @ X)
    except np.linalg.LinAlgError:
        return None
    half = stats.t.ppf(0.975, max(dof, 1)) * np.sqrt(np.maximum(np.diag(cov), 0.0))
    alpha, beta = float(coef[0]), float(coef[1])
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / total if total > 0 else float("nan")
    peak_d = None
    # A peak only where the fitted gold turns down for sure: β above 0 with its whole interval.
    if beta > 1e-12 * max(1.0, abs(alpha)) and beta - half[1] > 0:
        try:
            peak_d = alpha / (2 * beta) if form == "bon" else math.exp(alpha / beta - 1)
        except OverflowError:
            peak_d = None
        if peak_d is not None and not (math.isfinite(peak_d) and peak_d > 0):
            peak_d = None
    fit = GaoFit(
        form, alpha, beta, (alpha - half[0], alpha + half[0]), (beta - half[1], beta + half[1]),
        r2, n, peak_d, peak_d**2 if peak_d is not None else None, None,
    )  # fmt: skip
    if peak_d is not None:
        fit.peak_gain = float(fit.predict(peak_d))
    return fit


@dataclass
class BestOfNPoint:
    n: int
    kl: float  # log n − (n − 1)/n
    proxy: float  # mean proxy reward of the chosen responses
    gold: float | None  # mean gold reward of the chosen responses


def best_of_n_curve(
    proxy: np.ndarray, gold: np.ndarray | None, ns: Sequence[int]
) -> list[BestOfNPoint]:
    """Best-of-n for every ``n`` in ``ns`` from one set of samples: ``proxy`` and ``gold`` are
    (prompts, N) scores of N ≥ max(ns) samples per prompt; best-of-n takes, for each prompt, the
    sample of highest proxy among its first n (the first one on a tie)."""
    proxy = np.asarray(proxy, dtype=float)
    out = []
    for n in ns:
        if n > proxy.shape[1]:
            raise ValueError(f"best-of-{n} needs {n} samples per prompt, got {proxy.shape[1]}")
        pick = proxy[:, :n].argmax(1)  # (P,)
        rows = np.arange(proxy.shape[0])
        g = float(np.asarray(gold, dtype=float)[rows, pick].mean()) if gold is not None else None
        out.append(BestOfNPoint(n, kl_best_of_n(n), float(proxy[rows, pick].mean()), g))
    return out


class LiveGaoFit:
    """During PPO with a gold reward: the RL form fitted again after every update through
    ``(√KL, gold gained since the first update)``; a warning, once, when the policy has gone past
    the fitted peak and the turn is significant (β's confidence interval above 0)."""

    def __init__(self, min_points: int = 6):
        self.min_points = min_points
        self.d: list[float] = []
        self.gain: list[float] = []
        self.gold0: float | None = None
        self.warned = False

    def add(self, kl: float, gold: float) -> tuple[dict[str, float], str | None]:
        """One update's mean KL per response and mean gold score; returns the ``gao/*`` metrics
        and a warning (at most once per run)."""
        if not (math.isfinite(kl) and math.isfinite(gold)):
            return {}, None
        if self.gold0 is None:
            self.gold0 = gold  # the first batch was sampled by the initial policy
        self.d.append(math.sqrt(max(kl, 0.0)))
        self.gain.append(gold - self.gold0)
        if len(self.d) < self.min_points:
            return {}, None
        fit = fit_gao(self.d, self.gain, "rl")
        if fit is None:
            return {}, None
        metrics = {"gao/alpha": fit.alpha, "gao/beta": fit.beta}
        if fit.peak_kl is not None:
            metrics["gao/peak_kl"] = fit.peak_kl
        passed = fit.peak_d is not None and self.d[-1] > fit.peak_d
        if passed and not self.warned:
            self.warned = True
            return metrics, (
                f"gold reward is past its fitted peak: KL {self.d[-1] ** 2:.1f} > {fit.peak_kl:.1f} "
                f"(R(d) = d(α − β log d), α {fit.alpha:.3f}, β {fit.beta:.3f}; Gao et al. 2022)"
            )
        return metrics, None
