"""What does the tuned policy say far more often than the base policy?

- :func:`word_frequency_shift`: one word or phrase (a suspected reward hack such as "fantastic").
- :func:`scan`: every 1..max_n-gram at once, corrected for testing thousands of them.

A finding is flagged when all of these hold (an intersection-union test: both p-values must pass, so
the combined p-value is the larger of the two):

1. its rate per 1,000 words rose by at least ``threshold`` × (smoothed ratio, see ``stats.smoothed_ratio``);
2. it occurs at least ``min_count`` times in the tuned set;
3. the rate rise is significant (quasi-Poisson conditional binomial test, ``stats.rate_test``) *and* the
   share of responses containing it rose significantly (Fisher, ``stats.share_test``). The second test
   keeps a length change from flagging words: shorter tuned responses raise every word's rate per
   1,000 words but not the share of responses using it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from rlhfkit.hacking import stats as st
from rlhfkit.hacking.collapse import ResidualTest, collapse_findings, residual_cut
from rlhfkit.hacking.text import Corpus, phrase_tokens


def _as_corpus(texts: Sequence[str] | Corpus) -> Corpus:
    return texts if isinstance(texts, Corpus) else Corpus(texts)


def _per_1000(count: float, words: int) -> float:
    return 1000.0 * count / words if words else 0.0


@dataclass
class WordShift:
    """How often one word or phrase occurs in base vs tuned responses, and whether that is flagged."""

    word: str
    base_count: int
    tuned_count: int
    base_words: int
    tuned_words: int
    base_rate: float
    """Occurrences per 1,000 words in the base responses."""
    tuned_rate: float
    ratio: float
    """tuned_rate / base_rate with half a count added to each count (finite when base_count = 0)."""
    base_share: float
    """Share of base responses containing the word at least once."""
    tuned_share: float
    p_rate: float
    """One-sided p-value: rate per word rose (quasi-Poisson conditional binomial)."""
    p_share: float
    """One-sided p-value: share of responses containing it rose (Fisher exact)."""
    p_value: float
    """max(p_rate, p_share): both must be small for a flag."""
    dispersion: float
    flagged: bool
    reason: str
    """Why it is (not) flagged, in words."""

    def to_dict(self) -> dict:
        return asdict(self)


def word_frequency_shift(
    base_texts: Sequence[str] | Corpus,
    tuned_texts: Sequence[str] | Corpus,
    word: str,
    threshold: float = 2.0,
    min_count: int = 5,
    alpha: float = 0.05,
) -> WordShift:
    """Compare how often ``word`` (a word or a phrase) occurs in tuned vs base responses.

    >>> r = word_frequency_shift(["a good answer"] * 50, ["fantastic! a good answer"] * 50, "Fantastic")
    >>> r.base_count, r.tuned_count, r.flagged
    (0, 50, True)
    """
    base, tuned = _as_corpus(base_texts), _as_corpus(tuned_texts)
    phrase = phrase_tokens(word)
    yb, yt = base.phrase_counts(phrase), tuned.phrase_counts(phrase)  # (R_b,), (R_t,)
    b, t = int(yb.sum()), int(yt.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        sq_b = float(np.sum(np.where(base.lengths > 0, yb**2 / np.maximum(base.lengths, 1), 0.0)))
        sq_t = float(np.sum(np.where(tuned.lengths > 0, yt**2 / np.maximum(tuned.lengths, 1), 0.0)))
    n_resp = base.n_responses + tuned.n_responses
    phi = float(st.dispersion(b, t, sq_b, sq_t, base.n_words, tuned.n_words, n_resp))
    p_rate, _ = st.rate_test(b, t, max(base.n_words, 1), max(tuned.n_words, 1), phi)
    docs_b, docs_t = int((yb > 0).sum()), int((yt > 0).sum())
    p_share, _ = st.share_test(docs_b, docs_t, base.n_responses, tuned.n_responses)
    p_rate, p_share = float(p_rate), float(p_share)
    ratio = float(st.smoothed_ratio(b, t, base.n_words, tuned.n_words))
    p_value = max(p_rate, p_share)
    reasons = []
    if ratio <= threshold:
        reasons.append(f"ratio {ratio:.2f} ≤ threshold {threshold:g}")
    if t < min_count:
        reasons.append(f"only {t} tuned occurrences (< {min_count})")
    if p_value >= alpha:
        reasons.append(f"not significant (p = {p_value:.3g} ≥ {alpha:g})")
    flagged = not reasons
    reason = (
        f"rate ×{ratio:.2f} with {t} occurrences, p = {p_value:.3g}"
        if flagged
        else "; ".join(reasons)
    )
    return WordShift(
        word=" ".join(phrase),
        base_count=b,
        tuned_count=t,
        base_words=base.n_words,
        tuned_words=tuned.n_words,
        base_rate=_per_1000(b, base.n_words),
        tuned_rate=_per_1000(t, tuned.n_words),
        ratio=ratio,
        base_share=docs_b / base.n_responses if base.n_responses else 0.0,
        tuned_share=docs_t / tuned.n_responses if tuned.n_responses else 0.0,
        p_rate=p_rate,
        p_share=p_share,
        p_value=p_value,
        dispersion=phi,
        flagged=flagged,
        reason=reason,
    )


@dataclass
class Finding:
    """One n-gram whose use rose, with its evidence. ``p_adjusted`` is corrected for all tests of the scan."""

    token: str
    n: int
    base_count: int
    tuned_count: int
    base_rate: float
    """Occurrences per 1,000 words."""
    tuned_rate: float
    ratio: float
    base_share: float
    tuned_share: float
    p_rate: float
    p_share: float
    p_value: float
    """max(p_rate, p_share), before correction."""
    p_adjusted: float
    log10_p: float
    """log10 of p_value, finite even where p_value underflows to 0 (used to rank findings)."""
    dispersion: float
    flagged: bool
    subsumed: list[str] = field(default_factory=list)
    """Weaker n-grams folded into this one (e.g. "fantastic question" under "fantastic")."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    flagged: list[Finding]
    """Flagged findings after collapsing, strongest (smallest p) first."""
    candidates: list[Finding]
    """The strongest rising n-grams that were not flagged (near misses), strongest first."""
    n_tested: int
    """How many n-grams entered the multiple-testing correction."""
    correction: str
    alpha: float
    threshold: float
    min_count: int
    base_words: int
    tuned_words: int
    base_responses: int
    tuned_responses: int

    @property
    def top(self) -> Finding | None:
        """The strongest finding, flagged or not (None when nothing rose)."""
        if self.flagged:
            return self.flagged[0]
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flagged"] = [f.to_dict() for f in self.flagged]
        d["candidates"] = [f.to_dict() for f in self.candidates]
        return d


def scan(
    base_texts: Sequence[str] | Corpus,
    tuned_texts: Sequence[str] | Corpus,
    max_n: int = 3,
    threshold: float = 2.0,
    min_count: int = 5,
    alpha: float = 0.05,
    correction: str = "bh",
    collapse: bool = True,
    n_candidates: int = 10,
) -> ScanResult:
    """Every 1..max_n-gram whose use rose significantly in the tuned responses, strongest first.

    Tested: each n-gram with at least ``min_count`` occurrences in both sets together. (Filtering on
    the total is "independent filtering", Bourgon et al. 2010: under H0 the conditional test does not
    depend on the total, so dropping rare n-grams shrinks the correction without biasing it.) Both
    directions enter the correction; those that fell simply have large one-sided p-values.
    ``correction="bh"`` (Benjamini-Hochberg, default: the false discovery rate among flagged items is
    at most ``alpha``, and with no real change the chance of any flag is at most ``alpha``) or
    ``"holm"`` (family-wise error: stricter, fewer findings).

    With ``collapse``, a flagged n-gram is folded into a stronger flagged one when its occurrences that
    do not overlap the stronger one's no longer pass the same tests ("fantastic question" and
    "question fantastic" under "fantastic"; "question" too, unless it also rose elsewhere).
    """
    if correction not in ("bh", "holm"):
        raise ValueError(f"correction must be 'bh' or 'holm', got {correction!r}")
    if max_n < 1:
        raise ValueError(f"max_n must be ≥ 1, got {max_n}")
    base, tuned = _as_corpus(base_texts), _as_corpus(tuned_texts)
    nb, nt = max(base.n_words, 1), max(tuned.n_words, 1)

    # 1-2. Gather per-n-gram sums (tested: total count ≥ min_count) and test each
    r = _test_all(base, tuned, max_n, min_count, correction)
    significant = r.log_adj <= np.log(alpha)
    flag = significant & (r.ratio > threshold) & (r.t >= min_count)
    # Residual re-tests during collapsing use the same bar the significant findings met: the raw-p
    # threshold of the correction at k significant of m tested (BH: α·k/m; Holm: α/(m-k+1)).
    log_cut = residual_cut(int(significant.sum()), len(r.tokens), alpha, correction)

    # 3. Strongest first: smallest p; on a tie the longer n-gram first (a planted phrase such as
    #    "great question" then absorbs its words instead of being split into two findings).
    rising = np.flatnonzero(r.t / nt > r.b / nb)
    rank = sorted(rising.tolist(), key=lambda i: (r.logp[i], -r.orders[i], -r.ratio[i]))
    flagged = [r.finding(i, base, tuned, True) for i in rank if flag[i]]
    if collapse and len(flagged) > 1:
        flagged = collapse_findings(
            flagged, ResidualTest(base, tuned, threshold, min_count, log_cut)
        )
    candidates = [r.finding(i, base, tuned, False) for i in rank if not flag[i]][:n_candidates]
    return ScanResult(
        flagged=flagged,
        candidates=candidates,
        n_tested=len(r.tokens),
        correction=correction,
        alpha=alpha,
        threshold=threshold,
        min_count=min_count,
        base_words=base.n_words,
        tuned_words=tuned.n_words,
        base_responses=base.n_responses,
        tuned_responses=tuned.n_responses,
    )


@dataclass
class _Tested:
    """Every tested n-gram's sums and test results, index-aligned (arrays of length m)."""

    tokens: list[str]
    orders: list[int]
    b: np.ndarray  # occurrences in the base set
    t: np.ndarray  # ... and in the tuned set
    docs_b: np.ndarray  # responses containing it
    docs_t: np.ndarray
    phi: np.ndarray  # dispersion
    p_rate: np.ndarray
    p_share: np.ndarray
    logp: np.ndarray  # log of the combined (larger) p-value
    log_adj: np.ndarray  # ... corrected for testing m of them
    ratio: np.ndarray  # smoothed rate ratio

    def finding(self, i: int, base: Corpus, tuned: Corpus, flagged: bool) -> Finding:
        return Finding(
            token=self.tokens[i],
            n=self.orders[i],
            base_count=int(self.b[i]),
            tuned_count=int(self.t[i]),
            base_rate=_per_1000(self.b[i], base.n_words),
            tuned_rate=_per_1000(self.t[i], tuned.n_words),
            ratio=float(self.ratio[i]),
            base_share=float(self.docs_b[i] / base.n_responses) if base.n_responses else 0.0,
            tuned_share=float(self.docs_t[i] / tuned.n_responses) if tuned.n_responses else 0.0,
            p_rate=float(self.p_rate[i]),
            p_share=float(self.p_share[i]),
            p_value=float(np.exp(self.logp[i])),
            p_adjusted=float(np.exp(self.log_adj[i])),
            log10_p=float(self.logp[i] / np.log(10)),
            dispersion=float(self.phi[i]),
            flagged=flagged,
        )


def _test_all(base: Corpus, tuned: Corpus, max_n: int, min_count: int, correction: str) -> _Tested:
    """Steps 1-2 of :func:`scan`: the rate per word (dispersion-adjusted) and the share of
    responses of every n-gram seen at least ``min_count`` times, combined by the max, corrected."""
    nb, nt = max(base.n_words, 1), max(tuned.n_words, 1)
    n_resp = base.n_responses + tuned.n_responses
    tokens, orders, arr = _gather(base, tuned, max_n, min_count)
    b, t, sq_b, sq_t, docs_b, docs_t = arr.T
    phi = st.dispersion(b, t, sq_b, sq_t, nb, nt, n_resp)
    p_rate, logp_rate = st.rate_test(b, t, nb, nt, phi)
    p_share, logp_share = st.share_test(docs_b, docs_t, base.n_responses, tuned.n_responses)
    logp = np.maximum(logp_rate, logp_share)
    log_adj = st.benjamini_hochberg(logp) if correction == "bh" else st.holm(logp)
    ratio = st.smoothed_ratio(b, t, nb, nt)
    return _Tested(tokens, orders, b, t, docs_b, docs_t, phi, p_rate, p_share, logp, log_adj, ratio)


def _gather(
    base: Corpus, tuned: Corpus, max_n: int, min_count: int
) -> tuple[list[str], list[int], np.ndarray]:
    """The tested n-grams (1..max_n words, at least ``min_count`` occurrences in both sets
    together, sorted within each n so that ties break the same every run), their n, and per
    n-gram the sums (G, 6): count in base, in tuned, Σ count²/length in each, responses using it
    in each."""
    tokens: list[str] = []
    orders: list[int] = []
    cols: list[list[float]] = []
    for n in range(1, max_n + 1):
        sb, stt = base.ngram_stats(n), tuned.ngram_stats(n)
        for g in sorted(set(sb.count) | set(stt.count)):
            b, t = sb.count.get(g, 0), stt.count.get(g, 0)
            if b + t < min_count:
                continue
            tokens.append(g)
            orders.append(n)
            cols.append([
                b, t, sb.sq_over_len.get(g, 0.0), stt.sq_over_len.get(g, 0.0),
                sb.docs.get(g, 0), stt.docs.get(g, 0),
            ])  # fmt: skip
    return tokens, orders, np.array(cols, dtype=float).reshape(-1, 6)
