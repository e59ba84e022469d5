"""The statistics behind the detector, as pure vectorized functions (numpy arrays in, arrays out).

- :func:`rate_test`: did the rate per word rise? Exact conditional binomial test of two Poisson rates
  (Przyborowski & Wilenski 1940), with counts deflated by a quasi-Poisson dispersion factor because
  words cluster within responses.
- :func:`share_test`: did the share of responses containing the n-gram rise? One-sided Fisher exact test.
- :func:`benjamini_hochberg`, :func:`holm`: multiple-testing corrections, in log space so p-values
  far below 1e-300 still sort correctly.

Every p-value comes with its natural log (``logp``) for the same reason.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import special, stats

# Added to both counts before taking the ratio of rates, so a word never seen in the base set gets
# a finite ratio (Haldane-Anscombe half-count correction): ratio = ((t + ½)/N_t) / ((b + ½)/N_b).
RATIO_PSEUDOCOUNT = 0.5


def smoothed_ratio(base_count, tuned_count, base_words, tuned_words):
    """Tuned rate over base rate with half a count added to each side (finite when base_count = 0)."""
    base_count = np.asarray(base_count, dtype=float)
    tuned_count = np.asarray(tuned_count, dtype=float)
    base_rate = (base_count + RATIO_PSEUDOCOUNT) / max(base_words, 1)
    tuned_rate = (tuned_count + RATIO_PSEUDOCOUNT) / max(tuned_words, 1)
    return tuned_rate / base_rate


def dispersion(
    base_count,
    tuned_count,
    base_sq_over_len,
    tuned_sq_over_len,
    base_words,
    tuned_words,
    n_responses,
):
    """Quasi-Poisson dispersion φ = max(1, Pearson χ² / (R − 2)), one per n-gram.

    Model: response i of group g has y_i ~ (over-dispersed) Poisson(r_g · L_i), L_i its words, r_g = the
    group's count / words. Pearson χ² = Σ_i (y_i − r_g L_i)² / (r_g L_i), which over a group equals
    Σ_i y_i² / L_i / r_g − count_g (so only Σ y_i²/L_i is needed). φ ≈ 1 for words used at most once per
    response; a word that comes in bursts within a few responses gets φ ≫ 1. Clamped at 1 so the
    adjustment only ever makes the test more conservative.
    """
    b = np.asarray(base_count, dtype=float)
    t = np.asarray(tuned_count, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi_b = np.where(b > 0, np.asarray(base_sq_over_len) * base_words / b - b, 0.0)
        chi_t = np.where(t > 0, np.asarray(tuned_sq_over_len) * tuned_words / t - t, 0.0)
    df = max(n_responses - 2, 1)
    return np.maximum(1.0, (chi_b + chi_t) / df)


def rate_test(base_count, tuned_count, base_words, tuned_words, phi=1.0):
    """One-sided test that the tuned rate per word exceeds the base rate. Returns ``(p, logp)``.

    Given k = b + t occurrences in all, under H0 (equal rates) the tuned share is Binomial(k, p0) with
    p0 = N_t / (N_b + N_t) (exact, conditional on k: Przyborowski & Wilenski 1940). With dispersion φ the
    counts are divided by φ first (quasi-likelihood scaling: φ·Poisson(μ/φ) has variance φμ), using the
    regularized incomplete beta, which extends P(X ≥ t) = I_{p0}(t, k − t + 1) to non-integer counts.
    """
    b = np.asarray(base_count, dtype=float)
    t = np.asarray(tuned_count, dtype=float)
    phi = np.asarray(phi, dtype=float)
    p0 = tuned_words / (base_words + tuned_words)
    te, ke = t / phi, (b + t) / phi
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(t > 0, special.betainc(np.maximum(te, 1e-12), ke - te + 1.0, p0), 1.0)
        logp = np.log(p)
        # Below ~1e-300 the beta function underflows: use the Chernoff bound log P ≤ −k·KL(t/k ‖ p0),
        # which is tight on the log scale there and only ranks the strongest findings.
        q = np.clip(te / np.maximum(ke, 1e-12), 1e-300, 1 - 1e-16)
        kl = q * np.log(q / p0) + (1 - q) * np.log((1 - q) / (1 - p0))
        chernoff = -ke * np.where(q > p0, kl, 0.0)
    logp = np.where(np.isfinite(logp) & (p > 1e-290), logp, chernoff)
    return np.exp(logp), logp


def share_test(base_docs, tuned_docs, base_responses, tuned_responses):
    """One-sided Fisher exact test that a larger share of tuned responses contain the n-gram.

    Responses are the sampling units here, so clustering of a word within a response cannot inflate
    the evidence. Returns ``(p, logp)``.
    """
    bd = np.asarray(base_docs, dtype=np.int64)
    td = np.asarray(tuned_docs, dtype=np.int64)
    total = base_responses + tuned_responses
    p = np.atleast_1d(
        np.asarray(stats.hypergeom.sf(td - 1, total, bd + td, tuned_responses), dtype=float)
    )
    with np.errstate(divide="ignore"):
        logp = np.log(np.clip(p, 0.0, 1.0))
    # scipy's logsf is exact far into the tail but loops in Python: use it only where sf underflows.
    tiny = np.flatnonzero(p < 1e-290)
    if tiny.size:
        bd1, td1 = np.broadcast_to(bd, p.shape)[tiny], np.broadcast_to(td, p.shape)[tiny]
        logp[tiny] = stats.hypergeom.logsf(td1 - 1, total, bd1 + td1, tuned_responses)
    logp = np.minimum(logp, 0.0).reshape(np.shape(td + bd))
    return np.exp(logp), logp


def benjamini_hochberg(logp):
    """Benjamini-Hochberg adjusted p-values (q-values), taking and returning natural logs.

    q_(i) = min_{j ≥ i} p_(j) · m / j. Rejecting q ≤ α controls the false discovery rate at α for
    independent or positively dependent tests, and when no n-gram truly changed (two samples of one
    distribution) it controls the chance of any flag at all at α.
    """
    logp = np.asarray(logp, dtype=float)
    m = logp.size
    if m == 0:
        return logp.copy()
    order = np.argsort(logp, kind="stable")
    ranks = np.arange(1, m + 1)
    scaled = logp[order] + np.log(m) - np.log(ranks)
    scaled = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(scaled, 0.0)
    return out


def holm(logp):
    """Holm step-down adjusted p-values (family-wise error), natural logs in and out."""
    logp = np.asarray(logp, dtype=float)
    m = logp.size
    if m == 0:
        return logp.copy()
    order = np.argsort(logp, kind="stable")
    scaled = logp[order] + np.log(m - np.arange(m))
    scaled = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = np.minimum(scaled, 0.0)
    return out


def welch_test(base, tuned, alternative="two-sided"):
    """Welch's t-test on two samples of per-response values; ``p = 1`` when it is undefined."""
    base = np.asarray(base, dtype=float)
    tuned = np.asarray(tuned, dtype=float)
    if base.size < 2 or tuned.size < 2:
        return 1.0
    if base.std() == 0 and tuned.std() == 0:
        if base.mean() == tuned.mean():
            return 1.0
        diff = tuned.mean() - base.mean()
        hit = {"two-sided": diff != 0, "greater": diff > 0, "less": diff < 0}[alternative]
        return 0.0 if hit else 1.0
    with warnings.catch_warnings():
        # Nearly constant samples (e.g. every response 20 words) trip a precision warning; the
        # p-value is still the right answer there (tiny when the means differ, ~1 when not).
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(tuned, base, equal_var=False, alternative=alternative).pvalue
    return 1.0 if not np.isfinite(p) else float(p)
