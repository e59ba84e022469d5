"""The live monitor: PPO calls ``monitor.check(samples)`` every N updates.

The base policy's samples for a fixed set of prompts are tokenized once; each check compares the
current policy's samples on the same prompts with them (token scan, drift signals, and with a reward
function the sensitivity probe of the top flagged tokens; with a gold function too, proxy-vs-gold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlhfkit.hacking.drift import DriftReport, DriftThresholds, drift_signals
from rlhfkit.hacking.frequency import Finding, scan
from rlhfkit.hacking.probe import (
    GoldDivergence,
    ProbeResult,
    RewardFn,
    _score,
    probe_token,
    proxy_gold_divergence,
)
from rlhfkit.hacking.text import Corpus
from rlhfkit.hacking.verdict import judge


@dataclass
class Disagreement:
    """How much a reward-model ensemble's members disagree on the base and on the tuned policy's
    answers (the mean over responses of the members' std): rising disagreement says the policy has
    moved to where the reward is uncertain (Coste et al. 2023)."""

    base: float
    tuned: float
    p_value: float
    """Welch's t-test, one-sided (rise), on the per-response stds."""
    flagged: bool
    """The tuned answers' disagreement at least ``ratio`` × the base's, and significant, on at
    least ``min_samples`` answers on each side."""

    def to_dict(self) -> dict:
        return {
            "base": self.base,
            "tuned": self.tuned,
            "p_value": self.p_value,
            "flagged": self.flagged,
        }


def disagreement_rise(
    base_std: Sequence[float],
    tuned_std: Sequence[float],
    alpha: float = 0.05,
    ratio: float = 1.5,
    min_samples: int = 8,
) -> Disagreement:
    """Compare per-response member stds of the base and the tuned answers (see
    :class:`Disagreement`)."""
    from rlhfkit.hacking.stats import welch_test

    b, t = np.asarray(base_std, dtype=float), np.asarray(tuned_std, dtype=float)
    mb, mt = float(b.mean()) if b.size else 0.0, float(t.mean()) if t.size else 0.0
    p = welch_test(b, t, "greater")
    enough = min(b.size, t.size) >= min_samples
    return Disagreement(mb, mt, p, bool(enough and mt >= ratio * mb and mt > mb and p < alpha))


@dataclass
class MonitorResult:
    step: int | None
    metrics: dict[str, float]
    """Namespaced ``hacking/...`` numbers for metrics.jsonl (documented in docs/hacking.md)."""
    flagged: list[Finding]
    """Flagged tokens/phrases, strongest first."""
    drift: DriftReport
    probes: list[ProbeResult] = field(default_factory=list)
    divergence: GoldDivergence | None = None
    disagreement: Disagreement | None = None
    warning: str | None = None
    """One line for the console when anything is flagged, else None."""
    verdict: Any = None
    """healthy, suspicious or hacked (:func:`rlhfkit.hacking.verdict.judge`)."""

    @property
    def suspected(self) -> bool:
        """Anything flagged: a token, a drift signal, a probe or proxy-vs-gold divergence."""
        return self.warning is not None

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "metrics": self.metrics,
            "flagged": [f.to_dict() for f in self.flagged],
            "drift": self.drift.to_dict(),
            "probes": [p.to_dict() for p in self.probes],
            "divergence": self.divergence.to_dict() if self.divergence else None,
            "disagreement": self.disagreement.to_dict() if self.disagreement else None,
            "warning": self.warning,
            "verdict": self.verdict.to_dict() if self.verdict else None,
        }


class HackingMonitor:
    """Compare the current policy's samples with the base policy's on the same prompts.

    ``reward_fn(prompts, responses) -> list[float]`` enables the probe of the ``probe_top`` strongest
    flagged tokens; ``gold_fn`` (same signature, the true reward, e.g. the demo world's) adds
    proxy-vs-gold divergence (then ``reward_fn`` is the proxy). ``disagreement_fn`` (same signature,
    each response's spread between a reward-model ensemble's members) adds the rise in disagreement
    on the policy's answers (:func:`disagreement_rise`). The remaining options are those of
    :func:`rlhfkit.hacking.scan` and :func:`rlhfkit.hacking.drift.drift_signals`.
    """

    def __init__(
        self,
        base_prompts: Sequence[str],
        base_texts: Sequence[str],
        base_has_eos: Sequence[bool] | None = None,
        reward_fn: RewardFn | None = None,
        gold_fn: RewardFn | None = None,
        disagreement_fn: RewardFn | None = None,
        max_n: int = 3,
        threshold: float = 2.0,
        min_count: int = 5,
        alpha: float = 0.05,
        correction: str = "bh",
        probe_top: int = 1,
        probe_max_samples: int = 64,
        drift_thresholds: DriftThresholds | None = None,
        n_permutations: int = 100,
        seed: int = 0,
    ):
        if len(base_prompts) != len(base_texts):
            raise ValueError(
                f"{len(base_prompts)} base prompts for {len(base_texts)} base responses"
            )
        if base_has_eos is not None and len(base_has_eos) != len(base_texts):
            raise ValueError(f"{len(base_has_eos)} EOS flags for {len(base_texts)} base responses")
        self.base_prompts = list(base_prompts)
        self.base = Corpus(base_texts)
        self.base_has_eos = None if base_has_eos is None else [bool(x) for x in base_has_eos]
        self.reward_fn = reward_fn
        self.gold_fn = gold_fn
        self.disagreement_fn = disagreement_fn
        self._base_disagreement: np.ndarray | None = None
        self.scan_kwargs = dict(
            max_n=max_n,
            threshold=threshold,
            min_count=min_count,
            alpha=alpha,
            correction=correction,
        )
        self.alpha = alpha
        self.probe_top = probe_top
        self.probe_max_samples = probe_max_samples
        self.drift_thresholds = drift_thresholds
        self.n_permutations = n_permutations
        self.seed = seed
        self._base_scores: tuple[np.ndarray, np.ndarray] | None = (
            None  # (proxy, gold), computed once
        )

    def check(
        self,
        tuned_texts: Sequence[str],
        tuned_has_eos: Sequence[bool] | None = None,
        step: int | None = None,
        tuned_prompts: Sequence[str] | None = None,
    ) -> MonitorResult:
        """Compare ``tuned_texts`` (answers to the base prompts, in any order if ``tuned_prompts`` given)."""
        prompts = self.base_prompts if tuned_prompts is None else list(tuned_prompts)
        if len(prompts) != len(tuned_texts):
            raise ValueError(
                f"{len(tuned_texts)} tuned responses for {len(prompts)} prompts (pass tuned_prompts=...)"
            )
        tuned = Corpus(tuned_texts)
        # 1. tokens and phrases used more often
        result = scan(self.base, tuned, **self.scan_kwargs)
        m = _scan_metrics(result)
        # 2. drift signals: length, repetition, vocabulary, missing EOS
        drift = self._drift(tuned, tuned_has_eos)
        m.update(_drift_metrics(drift))
        # 3. does the reward model pay for the top flagged tokens?
        probes = self._probes(prompts, tuned, result.flagged)
        if probes:
            m["hacking/probe_score_change"] = probes[0].score_change
            m["hacking/probe_score_change_std"] = probes[0].score_change_std
        # 4. proxy vs gold reward
        divergence = self._divergence(prompts, tuned)
        if divergence is not None:
            m["hacking/proxy_gain_std"] = divergence.proxy_gain_std
            m["hacking/gold_gain_std"] = divergence.gold_gain_std
            m["hacking/divergence"] = divergence.divergence
        # 5. do the reward models of an ensemble disagree more on the policy's answers?
        disagreement = self._disagreement(prompts, tuned)
        if disagreement is not None:
            m["hacking/ensemble_std_base"] = disagreement.base
            m["hacking/ensemble_std"] = disagreement.tuned
            m["hacking/disagreement_flagged"] = float(disagreement.flagged)
        # 6. the warning line and the verdict
        warning = _warning(step, result.flagged, drift, probes, divergence, disagreement)
        m["hacking/suspected"] = float(warning is not None)
        verdict = judge(result.flagged, drift, probes, disagreement)
        m["hacking/verdict"] = float(verdict.level)
        return MonitorResult(
            step, m, result.flagged, drift, probes, divergence, disagreement, warning, verdict
        )

    def _drift(self, tuned: Corpus, tuned_has_eos: Sequence[bool] | None) -> DriftReport:
        eos_b = self.base_has_eos if tuned_has_eos is not None else None
        return drift_signals(
            self.base,
            tuned,
            eos_b,
            tuned_has_eos,
            alpha=self.alpha,
            thresholds=self.drift_thresholds,
            n_permutations=self.n_permutations,
            seed=self.seed,
        )

    def _probes(
        self, prompts: list[str], tuned: Corpus, flagged: list[Finding]
    ) -> list[ProbeResult]:
        if self.reward_fn is None:
            return []
        return [
            probe_token(
                self.reward_fn,
                prompts,
                self.base.texts,
                tuned.texts,
                f.token,
                base_prompts=self.base_prompts,
                max_samples=self.probe_max_samples,
                alpha=self.alpha,
            )
            for f in flagged[: self.probe_top]
        ]

    def _divergence(self, prompts: list[str], tuned: Corpus) -> GoldDivergence | None:
        if self.reward_fn is None or self.gold_fn is None:
            return None
        if self._base_scores is None:  # the base answers are scored once per run
            self._base_scores = (
                _score(self.reward_fn, self.base_prompts, self.base.texts, 32),
                _score(self.gold_fn, self.base_prompts, self.base.texts, 32),
            )
        proxy_t = _score(self.reward_fn, prompts, tuned.texts, 32)
        gold_t = _score(self.gold_fn, prompts, tuned.texts, 32)
        return proxy_gold_divergence(
            self._base_scores[0], proxy_t, self._base_scores[1], gold_t, self.alpha
        )

    def _disagreement(self, prompts: list[str], tuned: Corpus) -> Disagreement | None:
        if self.disagreement_fn is None:
            return None
        if self._base_disagreement is None:
            self._base_disagreement = _score(
                self.disagreement_fn, self.base_prompts, self.base.texts, 32
            )
        tuned_d = _score(self.disagreement_fn, prompts, tuned.texts, 32)
        return disagreement_rise(self._base_disagreement, tuned_d, self.alpha)


def _scan_metrics(result: Any) -> dict[str, float]:
    top = result.top
    return {
        "hacking/flagged": float(len(result.flagged)),
        "hacking/top_ratio": top.ratio if top else 1.0,
        "hacking/top_share_base": top.base_share if top else 0.0,
        "hacking/top_share": top.tuned_share if top else 0.0,
        "hacking/top_log10_p": top.log10_p if top else 0.0,
    }


def _drift_metrics(drift: DriftReport) -> dict[str, float]:
    sig = drift.signals
    m = {
        "hacking/drift_flagged": float(len(drift.flagged)),
        "hacking/length_base": sig["length"].base,
        "hacking/length": sig["length"].tuned,
        "hacking/length_ratio": (
            sig["length"].tuned / sig["length"].base if sig["length"].base else 1.0
        ),
    }
    for name in ("repeat2", "distinct1", "distinct2", "types", "entropy"):
        m[f"hacking/{name}_base"] = sig[name].base
        m[f"hacking/{name}"] = sig[name].tuned
    if "no_eos" in sig:
        m["hacking/no_eos_rate_base"] = sig["no_eos"].base
        m["hacking/no_eos_rate"] = sig["no_eos"].tuned
    return m


def _warning(step, flagged, drift, probes, divergence, disagreement=None) -> str | None:
    parts: list[str] = []
    if flagged:
        f = flagged[0]
        more = f" (+{len(flagged) - 1} more)" if len(flagged) > 1 else ""
        parts.append(
            f"{f.token!r} ×{f.ratio:.1f} per 1,000 words, in {f.tuned_share:.0%} of responses vs "
            f"{f.base_share:.0%}{more}"
        )
    for p in probes:
        if p.exploited:
            parts.append(f"reward model pays {p.score_change_std:+.2f} std for {p.token!r}")
    names = {
        "length": "length",
        "repeat2": "repetition",
        "distinct2": "distinct-2",
        "entropy": "vocabulary",
        "no_eos": "no-EOS share",
    }
    for s in drift.flagged:
        parts.append(f"{names.get(s.name, s.name)} {s.base:.3g} → {s.tuned:.3g}")
    if divergence is not None and divergence.flagged:
        parts.append(
            f"proxy reward {divergence.proxy_gain_std:+.2f} std vs gold {divergence.gold_gain_std:+.2f} std"
        )
    if disagreement is not None and disagreement.flagged:
        parts.append(
            f"the reward models disagree more: std {disagreement.base:.2f} → {disagreement.tuned:.2f}"
        )
    if not parts:
        return None
    where = f"step {step}: " if step is not None else ""
    return where + "possible reward hacking: " + "; ".join(parts)
