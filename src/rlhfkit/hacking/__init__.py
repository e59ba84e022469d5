"""Reward-hacking detection: what the tuned policy does far more often than the base policy.

- :func:`word_frequency_shift` — one word or phrase (a suspected reward hack such as "fantastic").
- :func:`scan` — every 1–3-gram whose use rose significantly, corrected for multiple testing.
- :func:`drift_signals` — length, repetition, diversity, vocabulary, missing EOS.
- :func:`probe_token` — does the reward model pay for the token itself?
- :func:`proxy_gold_divergence` — proxy reward rising while the gold reward does not.
- :class:`HackingMonitor` — all of it, every N updates inside PPO.

See docs/hacking.md for every signal, how it is computed and how to read it.
"""

from rlhfkit.hacking.drift import DriftReport, DriftSignal, DriftThresholds, drift_signals
from rlhfkit.hacking.frequency import Finding, ScanResult, WordShift, scan, word_frequency_shift
from rlhfkit.hacking.monitor import HackingMonitor, MonitorResult
from rlhfkit.hacking.probe import (
    GoldDivergence,
    PairedChange,
    ProbeResult,
    delete_token,
    insert_token,
    probe_token,
    proxy_gold_divergence,
)
from rlhfkit.hacking.text import Corpus, tokenize

__all__ = [
    "Corpus",
    "DriftReport",
    "DriftSignal",
    "DriftThresholds",
    "Finding",
    "GoldDivergence",
    "HackingMonitor",
    "MonitorResult",
    "PairedChange",
    "ProbeResult",
    "ScanResult",
    "WordShift",
    "delete_token",
    "drift_signals",
    "insert_token",
    "probe_token",
    "proxy_gold_divergence",
    "scan",
    "tokenize",
    "word_frequency_shift",
]
