"""The verdict without gold (hacking/verdict.py): each mark of over-optimization alone makes a
run hacked; a flagged word alone only suspicious."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.hacking.drift import DriftReport, DriftSignal
from rlhfkit.hacking.monitor import Disagreement, disagreement_rise
from rlhfkit.hacking.verdict import judge


@dataclass
class Found:
    token: str
    tuned_share: float


@dataclass
class Probe:
    token: str
    exploited: bool
    score_change_std: float = 0.4


def drift(*flagged: str) -> DriftReport:
    names = ("length", "repeat2", "distinct1", "distinct2", "types", "entropy")
    return DriftReport({n: DriftSignal(n, 1.0, 0.5, 0.001, "t", n in flagged, "") for n in names})


def test_healthy_and_suspicious():
    assert judge([], drift()).label == "healthy"
    v = judge([Found("fantastic", 0.6)], drift(), [Probe("fantastic", True)])
    assert v.label == "suspicious" and "'fantastic' (60%" in v.reasons[0]
    assert judge([], drift("length")).label == "suspicious"  # length alone is not collapse


def test_each_mark_of_over_optimization_alone():
    assert judge([], drift("entropy")).label == "hacked"
    assert judge([], drift("distinct2")).reasons[0].startswith("collapse: distinct2")
    habit = judge([Found("fantastic", 0.95)], drift(), [Probe("fantastic", True)])
    assert habit.label == "hacked" and "pays +0.40 std" in habit.reasons[0]
    # a habit the reward model does not pay for is not one it is exploiting
    assert judge([Found("the", 0.99)], drift(), [Probe("the", False)]).label == "suspicious"
    spread = Disagreement(0.2, 0.5, 0.001, True)
    assert judge([], drift(), [], spread).label == "hacked"
    assert judge([], drift(), [], Disagreement(0.2, 0.21, 0.4, False)).label == "healthy"


def test_disagreement_rise_needs_a_big_significant_rise():
    assert disagreement_rise([0.2] * 50 + [0.3] * 50, [0.6] * 50 + [0.7] * 50).flagged
    assert not disagreement_rise([0.2] * 50 + [0.3] * 50, [0.25] * 50 + [0.35] * 50).flagged  # ×1.2
    assert not disagreement_rise([0.2, 0.3], [0.6, 0.7]).flagged  # too few to be sure
