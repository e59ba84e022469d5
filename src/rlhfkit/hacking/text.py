"""Turning responses into words and n-grams, and the per-n-gram sums every test needs.

Words are lower-cased runs of letters/digits (apostrophes inside a word kept: "don't"), so matching
is case and punctuation insensitive: "Fantastic!" and "fantastic" are the same word. An n-gram is n
consecutive words of one response (never across two responses); punctuation between the words is
ignored, so "fantastic! question" is the 2-gram "fantastic question".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-cased words of ``text``; punctuation, underscores and extra spaces dropped."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def phrase_tokens(phrase: str) -> tuple[str, ...]:
    """The words of a word or phrase as :func:`tokenize` sees them (``ValueError`` if none)."""
    words = tuple(tokenize(phrase))
    if not words:
        raise ValueError(f"{phrase!r} contains no word to count")
    return words


def ngrams(words: Sequence[str], n: int) -> list[str]:
    """The n-grams of one response as space-joined strings, in order (overlapping)."""
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


@dataclass
class NgramStats:
    """Per n-gram sums over one set of responses (index i = response, y_i = count in it, L_i = its words).

    ``count`` = Σ y_i, ``docs`` = #{i: y_i > 0}, ``sq_over_len`` = Σ y_i² / L_i; the last one is all the
    quasi-Poisson dispersion estimate needs (see :func:`rlhfkit.hacking.stats.rate_test`).
    """

    count: dict[str, int] = field(default_factory=dict)
    docs: dict[str, int] = field(default_factory=dict)
    sq_over_len: dict[str, float] = field(default_factory=dict)


class Corpus:
    """One set of responses, tokenized once; n-gram sums computed on demand and cached.

    Build it once for the base samples and reuse it for every comparison (the live monitor does).
    """

    def __init__(self, texts: Sequence[str]):
        if isinstance(texts, str):
            raise TypeError("expected a list of response texts, got a single string")
        self.texts = list(texts)
        self.words: list[list[str]] = [tokenize(t) for t in self.texts]
        self.lengths = np.array([len(w) for w in self.words], dtype=np.int64)  # (R,)
        self.n_responses = len(self.words)
        self.n_words = int(self.lengths.sum())
        self._stats: dict[int, NgramStats] = {}

    def ngram_stats(self, n: int) -> NgramStats:
        if n not in self._stats:
            st = NgramStats()
            count, docs, sq = st.count, st.docs, st.sq_over_len
            for words in self.words:
                if len(words) < n:
                    continue
                length = len(words)
                for g, y in Counter(ngrams(words, n)).items():
                    if g in count:
                        count[g] += y
                        docs[g] += 1
                        sq[g] += y * y / length
                    else:
                        count[g] = y
                        docs[g] = 1
                        sq[g] = y * y / length
            self._stats[n] = st
        return self._stats[n]

    def phrase_counts(self, phrase: tuple[str, ...]) -> np.ndarray:
        """Occurrences of ``phrase`` (overlapping allowed) in each response: (R,) ints."""
        n = len(phrase)
        out = np.zeros(self.n_responses, dtype=np.int64)
        for i, words in enumerate(self.words):
            out[i] = sum(1 for j in range(len(words) - n + 1) if tuple(words[j : j + n]) == phrase)
        return out

    def occurrences(self, phrases: set[str], n: int) -> dict[str, list[tuple[int, int]]]:
        """Positions ``(response, first word)`` of every occurrence of the given n-word phrases."""
        out: dict[str, list[tuple[int, int]]] = {p: [] for p in phrases}
        if not phrases:
            return out
        for i, words in enumerate(self.words):
            for j, g in enumerate(ngrams(words, n)):
                if g in out:
                    out[g].append((i, j))
        return out
