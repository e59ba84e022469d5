"""Turning responses into words and n-grams, and the per-n-gram sums every test needs.

Words are lower-cased runs of letters/digits (apostrophes inside a word kept: "don't"), so matching
is case and punctuation insensitive: "Fantastic!" and "fantastic" are the same word. An n-gram is n
consecutive words of one sentence of one response: punctuation inside a sentence is ignored
("fantastic, question" is the 2-gram "fantastic question"), but no n-gram spans a sentence end
(".", "!" or "?" before a space or the end, or a line break). Otherwise two habits that merely sit
side by side ("Fantastic question! It is like ...") would be joined by "question it" into one
finding and the weaker one folded into the other.
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


_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n")


def tokenize_sentences(text: str) -> list[list[str]]:
    """The words of ``text`` (as :func:`tokenize`) grouped by sentence; empty sentences dropped."""
    return [w for part in _SENTENCE_END.split(text) if (w := tokenize(part))]


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
        self.sentences: list[list[list[str]]] = [tokenize_sentences(t) for t in self.texts]
        # all words of each response in order; positions index into these
        self.words: list[list[str]] = [[w for s in sents for w in s] for sents in self.sentences]
        self.lengths = np.array([len(w) for w in self.words], dtype=np.int64)  # (R,)
        self.n_responses = len(self.words)
        self.n_words = int(self.lengths.sum())
        self._stats: dict[int, NgramStats] = {}

    def ngram_stats(self, n: int) -> NgramStats:
        if n not in self._stats:
            st = NgramStats()
            count, docs, sq = st.count, st.docs, st.sq_over_len
            for i, words in enumerate(self.words):
                if len(words) < n:
                    continue
                length = len(words)
                for g, y in Counter(g for _, g in self._positioned_ngrams(i, n)).items():
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
        target = " ".join(phrase)
        out = np.zeros(self.n_responses, dtype=np.int64)
        for i in range(self.n_responses):
            out[i] = sum(g == target for _, g in self._positioned_ngrams(i, len(phrase)))
        return out

    def _positioned_ngrams(self, i: int, n: int) -> list[tuple[int, str]]:
        """``(position of the first word, n-gram)`` for each n-gram of response ``i``; the one place
        that keeps n-grams inside a sentence."""
        out: list[tuple[int, str]] = []
        start = 0
        for s in self.sentences[i]:
            out += [(start + j, g) for j, g in enumerate(ngrams(s, n))]
            start += len(s)
        return out

    def occurrences(self, phrases: set[str], n: int) -> dict[str, list[tuple[int, int]]]:
        """Positions ``(response, first word)`` of every occurrence of the given n-word phrases."""
        out: dict[str, list[tuple[int, int]]] = {p: [] for p in phrases}
        if not phrases:
            return out
        for i in range(self.n_responses):
            for j, g in self._positioned_ngrams(i, n):
                if g in out:
                    out[g].append((i, j))
        return out
