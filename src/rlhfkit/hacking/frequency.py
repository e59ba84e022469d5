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
    n_resp = base.n_responses + tuned.n_responses

    # 1. Gather per-n-gram sums from both sets (tested: total count ≥ min_count).
    tokens, orders, arr = _gather(base, tuned, max_n, min_count)
    b, t, sq_b, sq_t, docs_b, docs_t = arr.T

    # 2. Test each: rate per word (dispersion-adjusted) and share of responses; combine by max.
    phi = st.dispersion(b, t, sq_b, sq_t, nb, nt, n_resp)
    p_rate, logp_rate = st.rate_test(b, t, nb, nt, phi)
    p_share, logp_share = st.share_test(docs_b, docs_t, base.n_responses, tuned.n_responses)
    logp = np.maximum(logp_rate, logp_share)
    log_adj = st.benjamini_hochberg(logp) if correction == "bh" else st.holm(logp)
    ratio = st.smoothed_ratio(b, t, nb, nt)
    significant = log_adj <= np.log(alpha)
    flag = significant & (ratio > threshold) & (t >= min_count)
    # Residual re-tests during collapsing use the same bar the significant findings met: the raw-p
    # threshold of the correction at k significant of m tested (BH: α·k/m; Holm: α/(m-k+1)).
    log_cut = _residual_cut(int(significant.sum()), len(tokens), alpha, correction)

    def finding(i: int, flagged: bool) -> Finding:
        return Finding(
            token=tokens[i],
            n=orders[i],
            base_count=int(b[i]),
            tuned_count=int(t[i]),
            base_rate=_per_1000(b[i], base.n_words),
            tuned_rate=_per_1000(t[i], tuned.n_words),
            ratio=float(ratio[i]),
            base_share=float(docs_b[i] / base.n_responses) if base.n_responses else 0.0,
            tuned_share=float(docs_t[i] / tuned.n_responses) if tuned.n_responses else 0.0,
            p_rate=float(p_rate[i]),
            p_share=float(p_share[i]),
            p_value=float(np.exp(logp[i])),
            p_adjusted=float(np.exp(log_adj[i])),
            log10_p=float(logp[i] / np.log(10)),
            dispersion=float(phi[i]),
            flagged=flagged,
        )

    # 3. Strongest first: smallest p; on a tie the longer n-gram first (a planted phrase such as
    #    "great question" then absorbs its words instead of being split into two findings).
    rising = np.flatnonzero(t / nt > b / nb)
    rank = sorted(rising.tolist(), key=lambda i: (logp[i], -orders[i], -ratio[i]))
    flagged = [finding(i, True) for i in rank if flag[i]]
    if collapse and len(flagged) > 1:
        flagged = _collapse(flagged, base, tuned, threshold, min_count, log_cut)
    candidates = [finding(i, False) for i in rank if not flag[i]][:n_candidates]
    return ScanResult(
        flagged=flagged,
        candidates=candidates,
        n_tested=len(tokens),
        correction=correction,
        alpha=alpha,
        threshold=threshold,
        min_count=min_count,
        base_words=base.n_words,
        tuned_words=tuned.n_words,
        base_responses=base.n_responses,
        tuned_responses=tuned.n_responses,
    )


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


def _residual_cut(k: int, m: int, alpha: float, correction: str) -> float:
    """The log raw-p bar of the correction at k significant of m tested (BH: α·k/m; Holm:
    α/(m−k+1)); −∞ when nothing was significant."""
    if k == 0:
        return -np.inf
    if correction == "bh":
        return float(np.log(alpha * k / m))
    return float(np.log(alpha / (m - k + 1)))


def _collapse(
    flagged: list[Finding],
    base: Corpus,
    tuned: Corpus,
    threshold: float,
    min_count: int,
    log_cut: float,
) -> list[Finding]:
    """Fold each flagged n-gram into a stronger kept one when it does not stand on its own.

    Walk the findings strongest first. For each, drop its occurrences that overlap (share a word
    position with) an occurrence of an already kept finding, and re-test what is left with the same
    tests and the same significance bar. Keep it if the rest still passes; otherwise list it under
    the kept finding it overlapped most.
    """
    occ: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
    for n in sorted({f.n for f in flagged}):
        phrases = {f.token for f in flagged if f.n == n}
        ob, ot = base.occurrences(phrases, n), tuned.occurrences(phrases, n)
        for p in sorted(phrases):  # a fixed order: the bridging pass below is order-sensitive
            occ[p] = (ob[p], ot[p])

    kept: list[Finding] = []
    owner_b: dict[tuple[int, int], int] = {}  # word position -> index in kept
    owner_t: dict[tuple[int, int], int] = {}
    nb, nt = max(base.n_words, 1), max(tuned.n_words, 1)
    for f in flagged:
        ob, ot = occ[f.token]
        overlap: dict[int, int] = {}
        free_b, free_t, taken_b, taken_t = [], [], [], []
        for positions, owner, free, taken in (
            (ob, owner_b, free_b, taken_b),
            (ot, owner_t, free_t, taken_t),
        ):
            for r, j in positions:
                hits = [owner[(r, j + k)] for k in range(f.n) if (r, j + k) in owner]
                if hits:
                    overlap[hits[0]] = overlap.get(hits[0], 0) + 1
                    taken.append((r, j, hits[0]))
                else:
                    free.append((r, j))
        if overlap and not _still_rises(
            free_b, free_t, base, tuned, threshold, min_count, log_cut, nb, nt
        ):
            kept[max(overlap, key=overlap.get)].subsumed.append(f.token)
            # Its overlapping occurrences are explained by the kept finding, and so are their other
            # words: "what a great" absorbs "great question", and then "question" as well.
            for taken, owner in ((taken_b, owner_b), (taken_t, owner_t)):
                for r, j, k_owner in taken:
                    for k in range(f.n):
                        owner.setdefault((r, j + k), k_owner)
            continue
        kept.append(f)
        for positions, owner in ((ob, owner_b), (ot, owner_t)):
            for r, j in positions:
                for k in range(f.n):
                    owner.setdefault((r, j + k), len(kept) - 1)
    return _merge_bridged(kept, occ, base, tuned, threshold, min_count, log_cut)


def _merge_bridged(
    kept: list[Finding],
    occ: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]],
    base: Corpus,
    tuned: Corpus,
    threshold: float,
    min_count: int,
    log_cut: float,
) -> list[Finding]:
    """Second pass: merge a kept finding into a stronger one when flagged phrases bridge them.

    "What a fantastic question!" gives "fantastic" and, ranked before "what a fantastic", the word
    "what": the two do not overlap, so the walk keeps both. Here every flagged n-gram occurrence that
    touches two kept findings' words ("what a fantastic") ties the weaker one's occurrence to the
    stronger; the weaker is re-tested without its tied occurrences and merged if the rest fails.
    Weakest first, so chains fold all the way up.
    """
    if len(kept) < 2:
        return kept
    nb, nt = max(base.n_words, 1), max(tuned.n_words, 1)
    sides = []  # per side: word position -> (kept index, start of that kept finding's occurrence)
    for side in (0, 1):
        where: dict[tuple[int, int], tuple[int, tuple[int, int]]] = {}
        for i, f in enumerate(kept):
            for r, j in occ[f.token][side]:
                for k in range(f.n):
                    where.setdefault((r, j + k), (i, (r, j)))
        sides.append(where)
    # tied[side][i]: occurrence start of kept[i] -> index of the stronger kept finding it is tied to
    tied: list[list[dict[tuple[int, int], int]]] = [[{} for _ in kept] for _ in (0, 1)]
    for tok, (ob, ot) in occ.items():
        n = len(tok.split())
        for side, positions in ((0, ob), (1, ot)):
            where = sides[side]
            for r, j in positions:
                touching = {where[(r, j + k)] for k in range(n) if (r, j + k) in where}
                if len({i for i, _ in touching}) < 2:
                    continue
                strongest = min(i for i, _ in touching)
                for i, start in touching:
                    if i != strongest:
                        tied[side][i].setdefault(start, strongest)
    alive = list(range(len(kept)))
    for i in range(len(kept) - 1, 0, -1):
        tb, tt = tied[0][i], tied[1][i]
        if not tt:
            continue
        f = kept[i]
        free_b = [o for o in occ[f.token][0] if o not in tb]
        free_t = [o for o in occ[f.token][1] if o not in tt]
        if _still_rises(free_b, free_t, base, tuned, threshold, min_count, log_cut, nb, nt):
            continue
        targets = list(tt.values())
        into = max(set(targets), key=targets.count)
        while into not in alive:  # the target was itself merged further up
            into = next(j for j in alive if kept[into].token in kept[j].subsumed)
        kept[into].subsumed += [f.token, *f.subsumed]
        alive.remove(i)
    return [kept[i] for i in alive]


def _still_rises(free_b, free_t, base, tuned, threshold, min_count, log_cut, nb, nt) -> bool:
    """Re-test the occurrences left after removing overlaps (same tests, same significance bar)."""
    yb = np.bincount([r for r, _ in free_b], minlength=base.n_responses)
    yt = np.bincount([r for r, _ in free_t], minlength=tuned.n_responses)
    b, t = int(yb.sum()), int(yt.sum())
    if t < min_count or st.smoothed_ratio(b, t, nb, nt) <= threshold:
        return False
    sq_b = float(np.sum(yb**2 / np.maximum(base.lengths, 1)))
    sq_t = float(np.sum(yt**2 / np.maximum(tuned.lengths, 1)))
    phi = st.dispersion(b, t, sq_b, sq_t, nb, nt, base.n_responses + tuned.n_responses)
    _, logp_rate = st.rate_test(b, t, nb, nt, phi)
    _, logp_share = st.share_test(
        int((yb > 0).sum()), int((yt > 0).sum()), base.n_responses, tuned.n_responses
    )
    return float(max(logp_rate, logp_share)) <= log_cut
