"""One pair-agreement counter for rankings, scores and gold (data/pairs.py), against a hand count."""

import pytest

from rlhfkit.data.pairs import pair_agreement


def test_hand_counted():
    gold = [3.0, 2.0, 2.05, 0.0]  # with tolerance 0.1 the middle two are one level: 5 pairs
    scores = [1.0, 0.5, 0.5, 0.7]
    # (0,1) ✓ (0,2) ✓ (0,3) ✓ (1,3) ✗ (2,3) ✗ ; (1,2) skipped by the tolerance
    assert pair_agreement(scores, gold, tolerance=0.1) == (3, 5)
    # a tie in the values: wrong by default, left out with skip_ties
    assert pair_agreement([1.0, 1.0], [2.0, 1.0]) == (0, 1)
    assert pair_agreement([1.0, 1.0], [2.0, 1.0], skip_ties=True) == (0, 0)
    with pytest.raises(ValueError, match="2 values for 3"):
        pair_agreement([1, 2], [1, 2, 3])
