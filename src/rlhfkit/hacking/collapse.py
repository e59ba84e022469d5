"""Folding a scan's flagged n-grams into the stronger ones they are part of
(:func:`rlhfkit.hacking.frequency.scan` with ``collapse=True``): "fantastic question" and
"question fantastic" under "fantastic", unless their other occurrences rose on their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rlhfkit.hacking import stats as st
from rlhfkit.hacking.text import Corpus

if TYPE_CHECKING:  # frequency imports this module
    from rlhfkit.hacking.frequency import Finding


def residual_cut(k: int, m: int, alpha: float, correction: str) -> float:
    """The log raw-p bar of the correction at k significant of m tested (BH: α·k/m; Holm:
    α/(m−k+1)); −∞ when nothing was significant."""
    if k == 0:
        return -np.inf
    if correction == "bh":
        return float(np.log(alpha * k / m))
    return float(np.log(alpha / (m - k + 1)))


@dataclass(frozen=True)
class ResidualTest:
    """The bar a flagged n-gram's leftover occurrences must still pass: the scan's two sets, its
    ratio threshold and minimum count, and the raw-p cut its significant findings met."""

    base: Corpus
    tuned: Corpus
    threshold: float
    min_count: int
    log_cut: float

    def still_rises(self, free_b: list[tuple[int, int]], free_t: list[tuple[int, int]]) -> bool:
        """Whether the occurrences at these (response, word) positions alone still pass."""
        base, tuned = self.base, self.tuned
        nb, nt = max(base.n_words, 1), max(tuned.n_words, 1)
        yb = np.bincount([r for r, _ in free_b], minlength=base.n_responses)
        yt = np.bincount([r for r, _ in free_t], minlength=tuned.n_responses)
        b, t = int(yb.sum()), int(yt.sum())
        if t < self.min_count or st.smoothed_ratio(b, t, nb, nt) <= self.threshold:
            return False
        sq_b = float(np.sum(yb**2 / np.maximum(base.lengths, 1)))
        sq_t = float(np.sum(yt**2 / np.maximum(tuned.lengths, 1)))
        phi = st.dispersion(b, t, sq_b, sq_t, nb, nt, base.n_responses + tuned.n_responses)
        _, logp_rate = st.rate_test(b, t, nb, nt, phi)
        _, logp_share = st.share_test(
            int((yb > 0).sum()), int((yt > 0).sum()), base.n_responses, tuned.n_responses
        )
        return float(max(logp_rate, logp_share)) <= self.log_cut


def collapse_findings(flagged: list[Finding], test: ResidualTest) -> list[Finding]:
    """Fold each flagged n-gram into a stronger kept one when it does not stand on its own.

    Walk the findings strongest first. For each, drop its occurrences that overlap (share a word
    position with) an occurrence of an already kept finding, and re-test what is left with the same
    tests and the same significance bar. Keep it if the rest still passes; otherwise list it under
    the kept finding it overlapped most.
    """
    base, tuned = test.base, test.tuned
    occ: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
    for n in sorted({f.n for f in flagged}):
        phrases = {f.token for f in flagged if f.n == n}
        ob, ot = base.occurrences(phrases, n), tuned.occurrences(phrases, n)
        for p in sorted(phrases):  # a fixed order: the bridging pass below is order-sensitive
            occ[p] = (ob[p], ot[p])

    kept: list[Finding] = []
    owner_b: dict[tuple[int, int], int] = {}  # word position -> index in kept
    owner_t: dict[tuple[int, int], int] = {}
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
        if overlap and not test.still_rises(free_b, free_t):
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
    return _merge_bridged(kept, occ, test)


def _merge_bridged(
    kept: list[Finding],
    occ: dict[str, tuple[list[tuple[int, int]], list[tuple[int, int]]]],
    test: ResidualTest,
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
        if test.still_rises(free_b, free_t):
            continue
        targets = list(tt.values())
        into = max(set(targets), key=targets.count)
        while into not in alive:  # the target was itself merged further up
            into = next(j for j in alive if kept[into].token in kept[j].subsumed)
        kept[into].subsumed += [f.token, *f.subsumed]
        alive.remove(i)
    return [kept[i] for i in alive]
