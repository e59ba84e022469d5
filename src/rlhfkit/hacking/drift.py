"""Drift signals beside the tokens: length, repetition, diversity, vocabulary, missing EOS.

Each signal gives a base value, a tuned value, a one- or two-sided p-value and a flag. A signal is
flagged only when the change is both large (beyond its tolerance) and significant at
``alpha / (number of signals tested)`` (Bonferroni over the handful of drift signals), so two samples
of one distribution rarely raise any drift flag.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse, special

from rlhfkit.hacking import stats as st
from rlhfkit.hacking.text import Corpus, ngrams


@dataclass
class DriftSignal:
    name: str
    base: float
    tuned: float
    p_value: float | None
    """None when the signal has no test (reported only)."""
    test: str
    flagged: bool
    meaning: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DriftReport:
    signals: dict[str, DriftSignal]

    @property
    def flagged(self) -> list[DriftSignal]:
        return [s for s in self.signals.values() if s.flagged]

    def to_dict(self) -> dict:
        return {name: s.to_dict() for name, s in self.signals.items()}


@dataclass
class DriftThresholds:
    """How large a change must be (besides significant) to flag a drift signal."""

    length_ratio: float = 1.5
    """Flag mean length growing above this factor or shrinking below its inverse."""
    repeat_rise: float = 0.05
    """Flag the within-response repeated-bigram rate rising by at least this much (absolute)."""
    distinct_drop: float = 0.2
    """Flag distinct-2 falling by at least this fraction of its base value."""
    entropy_drop: float = 0.5
    """Flag the unigram entropy falling by at least this many bits."""
    no_eos_rise: float = 0.05
    """Flag the share of responses without EOS rising by at least this much (absolute)."""


def repeat_rate(words: Sequence[str], n: int = 2) -> float:
    """Share of a response's n-grams that repeat an earlier n-gram of the same response (0 if none)."""
    grams = ngrams(words, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def rarefied_types(counts: np.ndarray, size: int) -> np.ndarray:
    """Expected number of distinct types in a random subsample of ``size`` tokens, without replacement.

    Σ_j 1 − C(N − c_j, size) / C(N, size) (Hurlbert 1971). Type counts grow with sample size (Heaps'
    law), so sets of different sizes are compared at the smaller one's size. ``counts``: (..., V).
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(-1, keepdims=True)  # (..., 1)
    rest = total - counts
    with np.errstate(invalid="ignore"):
        log_absent = (
            special.gammaln(rest + 1)
            - special.gammaln(np.maximum(rest - size, 0) + 1)
            - special.gammaln(total + 1)
            + special.gammaln(total - size + 1)
        )
    absent = np.where((rest >= size) & (counts > 0), np.exp(log_absent), 0.0)
    return ((counts > 0) - absent).sum(-1)


def entropy_bits(counts: np.ndarray) -> np.ndarray:
    """Unigram entropy in bits with the Miller-Madow correction (K − 1) / (2N ln 2). ``counts``: (..., V)."""
    counts = np.asarray(counts, dtype=float)
    total = np.maximum(counts.sum(-1, keepdims=True), 1.0)
    p = counts / total
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log2(p), 0.0).sum(-1)
    k = (counts > 0).sum(-1)
    return h + (k - 1) / (2 * total[..., 0] * np.log(2))


def _count_matrix(corpora: list[Corpus], n: int) -> sparse.csr_matrix:
    """(responses of all corpora, n-gram types) counts, rows in corpus order."""
    index: dict[str, int] = {}
    rows, cols, vals = [], [], []
    r = 0
    for c in corpora:
        for words in c.words:
            for g, y in Counter(ngrams(words, n)).items():
                rows.append(r)
                cols.append(index.setdefault(g, len(index)))
                vals.append(y)
            r += 1
    return sparse.csr_matrix((vals, (rows, cols)), shape=(r, max(len(index), 1)), dtype=np.float64)


def _diversity(counts_b: np.ndarray, counts_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct-n of each side at the same number of n-grams (the smaller side's). (P, V) -> (P,), (P,)."""
    size = np.minimum(counts_b.sum(-1), counts_t.sum(-1))  # (P,)
    out = []
    for c in (counts_b, counts_t):
        d = np.array(
            [
                rarefied_types(row, int(s)) / s if s > 0 else 0.0
                for row, s in zip(c, size, strict=True)
            ]
        )
        out.append(d)
    return out[0], out[1]


def drift_signals(
    base_texts: Sequence[str] | Corpus,
    tuned_texts: Sequence[str] | Corpus,
    base_has_eos: Sequence[bool] | None = None,
    tuned_has_eos: Sequence[bool] | None = None,
    alpha: float = 0.05,
    thresholds: DriftThresholds | None = None,
    n_permutations: int = 200,
    seed: int = 0,
) -> DriftReport:
    """Length, repetition, diversity, vocabulary and missing-EOS drift from base to tuned.

    - ``length``: mean words per response; Welch's t-test, two-sided.
    - ``repeat2``: mean over responses of the share of bigrams repeating an earlier one in the same
      response (degenerate loops); Welch's t-test, one-sided (rise).
    - ``distinct1`` / ``distinct2``: distinct n-grams / all n-grams over the whole set, both sides
      rarefied to the same number of n-grams; distinct-2 tested by permuting responses between the
      sets (one-sided: drop). Low distinct-2 = the policy says the same things in every response.
    - ``entropy``: unigram entropy in bits (Miller-Madow corrected), permutation test (drop):
      vocabulary collapse. ``types``: distinct words at the same number of words (reported only).
    - ``no_eos``: share of responses that never emitted EOS; Fisher exact, one-sided (rise).
    """
    th = thresholds or DriftThresholds()
    base = base_texts if isinstance(base_texts, Corpus) else Corpus(base_texts)
    tuned = tuned_texts if isinstance(tuned_texts, Corpus) else Corpus(tuned_texts)
    with_eos = base_has_eos is not None and tuned_has_eos is not None
    level = alpha / (4 + with_eos)  # Bonferroni over the tested signals
    signals = {
        "length": _length_signal(base, tuned, th, level),  # 1.
        "repeat2": _repeat_signal(base, tuned, th, level),  # 2.
        **_diversity_signals(base, tuned, th, level, n_permutations, seed),  # 3.
    }
    if with_eos:  # 4.
        signals["no_eos"] = _no_eos_signal(base_has_eos, tuned_has_eos, base, tuned, th, level)
    return DriftReport(signals)


def _length_signal(base: Corpus, tuned: Corpus, th: DriftThresholds, level: float) -> DriftSignal:
    """1. Mean words per response; Welch's t-test, two-sided, and a ratio of at least
    ``th.length_ratio`` either way."""
    rb, rt = base.n_responses, tuned.n_responses
    lb, lt = base.lengths.mean() if rb else 0.0, tuned.lengths.mean() if rt else 0.0
    p = st.welch_test(base.lengths, tuned.lengths, "two-sided")
    ratio = lt / lb if lb > 0 else (np.inf if lt > 0 else 1.0)
    big = ratio >= th.length_ratio or ratio <= 1.0 / th.length_ratio
    return DriftSignal(
        "length", float(lb), float(lt), p, "Welch t, two-sided", bool(big and p < level),
        "mean words per response",
    )  # fmt: skip


def _repeat_signal(base: Corpus, tuned: Corpus, th: DriftThresholds, level: float) -> DriftSignal:
    """2. Repetition within responses: the mean share of a response's bigrams that repeat an
    earlier one; Welch's t-test, one-sided (rise)."""
    rep_b = np.array([repeat_rate(w) for w in base.words])
    rep_t = np.array([repeat_rate(w) for w in tuned.words])
    mb = float(rep_b.mean()) if base.n_responses else 0.0
    mt = float(rep_t.mean()) if tuned.n_responses else 0.0
    p = st.welch_test(rep_b, rep_t, "greater")
    return DriftSignal(
        "repeat2", mb, mt, p, "Welch t, one-sided (rise)",
        bool(mt - mb >= th.repeat_rise and p < level),
        "share of a response's bigrams repeating an earlier one of the same response",
    )  # fmt: skip


def _diversity_signals(
    base: Corpus, tuned: Corpus, th: DriftThresholds, level: float, n_permutations: int, seed: int
) -> dict[str, DriftSignal]:
    """3. Diversity across responses and vocabulary (distinct1, distinct2, types, entropy), with
    a permutation test over responses for distinct-2 and entropy (one-sided: drop)."""
    rb, rt = base.n_responses, tuned.n_responses
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(rb), np.ones(rt)]
    perms = np.stack(
        [labels] + [rng.permutation(labels) for _ in range(n_permutations)]
    )  # (P+1, R)
    x1, x2 = _count_matrix([base, tuned], 1), _count_matrix([base, tuned], 2)
    c1_t = np.asarray((sparse.csr_matrix(perms) @ x1).todense())  # (P+1, V1)
    c1_b = np.asarray(x1.sum(0)) - c1_t
    c2_t = np.asarray((sparse.csr_matrix(perms) @ x2).todense())  # (P+1, V2)
    c2_b = np.asarray(x2.sum(0)) - c2_t
    d1_b, d1_t = _diversity(c1_b[:1], c1_t[:1])
    d2_b, d2_t = _diversity(c2_b, c2_t)
    h_b, h_t = entropy_bits(c1_b), entropy_bits(c1_t)

    def perm_p(stat: np.ndarray) -> float:
        # One-sided (drop): share of relabelings with a drop at least as large as the observed one.
        return float((1 + np.sum(stat[1:] <= stat[0])) / (1 + n_permutations))

    test = f"permutation ({n_permutations}), one-sided (drop)"
    p_d2 = perm_p(d2_t - d2_b) if rb and rt else 1.0
    drop = (d2_b[0] - d2_t[0]) / d2_b[0] if d2_b[0] > 0 else 0.0
    size = int(min(c1_b[0].sum(), c1_t[0].sum()))
    p_h = perm_p(h_t - h_b) if rb and rt else 1.0
    return {
        "distinct1": DriftSignal(
            "distinct1", float(d1_b[0]), float(d1_t[0]), None, "reported only", False,
            "distinct words / words, both sets at the same number of words",
        ),
        "distinct2": DriftSignal(
            "distinct2", float(d2_b[0]), float(d2_t[0]), p_d2, test,
            bool(drop >= th.distinct_drop and p_d2 < level),
            "distinct bigrams / bigrams, both sets at the same number of bigrams",
        ),
        "types": DriftSignal(
            "types", float(rarefied_types(c1_b[0], size)), float(rarefied_types(c1_t[0], size)),
            None, "reported only", False, f"distinct words among {size} words of each set",
        ),
        "entropy": DriftSignal(
            "entropy", float(h_b[0]), float(h_t[0]), p_h, test,
            bool(h_b[0] - h_t[0] >= th.entropy_drop and p_h < level),
            "entropy of the unigram distribution in bits (vocabulary collapse)",
        ),
    }  # fmt: skip


def _no_eos_signal(
    base_has_eos: Sequence[bool], tuned_has_eos: Sequence[bool], base: Corpus, tuned: Corpus,
    th: DriftThresholds, level: float,
) -> DriftSignal:  # fmt: skip
    """4. The share of responses that never emitted EOS; Fisher exact, one-sided (rise)."""
    rb, rt = base.n_responses, tuned.n_responses
    eb, et = np.asarray(base_has_eos, dtype=bool), np.asarray(tuned_has_eos, dtype=bool)
    if eb.size != rb or et.size != rt:
        raise ValueError("has_eos flags must match the number of responses")
    nb, nt = float((~eb).mean()) if rb else 0.0, float((~et).mean()) if rt else 0.0
    p, _ = st.share_test(int((~eb).sum()), int((~et).sum()), rb, rt)
    return DriftSignal(
        "no_eos", nb, nt, float(p), "Fisher exact, one-sided (rise)",
        bool(nt - nb >= th.no_eos_rise and p < level), "share of responses that never emitted EOS",
    )  # fmt: skip
