"""Counting how often two orderings of the same responses agree, pair by pair: a ranking against
gold, scores against gold, one annotator against another. One function for all of them."""

from __future__ import annotations

from collections.abc import Sequence


def pair_agreement(
    values: Sequence[float],
    reference: Sequence[float],
    tolerance: float = 0.0,
    skip_ties: bool = False,
) -> tuple[int, int]:
    """``(agree, compared)`` over the pairs of responses that ``reference`` orders strictly (by
    more than ``tolerance``; higher is better in both): a pair agrees when ``values`` orders it
    the same way, strictly. A tie in ``values`` counts as a disagreement, or, with
    ``skip_ties``, is left out of the comparison."""
    if len(values) != len(reference):
        raise ValueError(f"{len(values)} values for {len(reference)} reference values")
    agree = compared = 0
    for i in range(len(reference)):
        for j in range(i + 1, len(reference)):
            ref = reference[i] - reference[j]
            if abs(ref) <= tolerance:
                continue
            diff = values[i] - values[j]
            if skip_ties and diff == 0:
                continue
            compared += 1
            agree += diff * ref > 0
    return agree, compared
