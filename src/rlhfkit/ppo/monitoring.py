"""The hacking monitor inside PPO: the initial policy's answers to fixed prompts, sampled once,
compared with the current policy's answers every ``--hacking-check-every`` updates
(:class:`rlhfkit.hacking.HackingMonitor`: token scan, drift, reward-model probe, proxy vs gold).
Runs on the main process; its state (the initial answers) is part of a checkpoint."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.ppo.rewards import RewardFn
from rlhfkit.runtime.io import write_json

# ``sample(prompt_texts) -> (responses, has_eos)``: the current policy on those prompts.
Sampler = Callable[[list[str]], tuple[list[str], list[bool]]]


class LiveMonitor:
    """``prompts``: the fixed prompts' text; ``reward_fn`` / ``gold_fn``: text reward functions
    for the probe and the proxy-vs-gold signal; ``factory``: ``HackingMonitor`` or a replacement
    with its constructor."""

    def __init__(
        self,
        prompts: list[str],
        sample: Sampler,
        reward_fn: RewardFn | None,
        gold_fn: RewardFn | None = None,
        factory: Callable[..., Any] | None = None,
        disagreement_fn: RewardFn | None = None,
    ):
        self.prompts, self.sample = prompts, sample
        self.reward_fn, self.gold_fn = reward_fn, gold_fn
        self.disagreement_fn = disagreement_fn
        if factory is None:
            from rlhfkit.hacking import HackingMonitor as factory  # lazy: only when asked for
        self.factory = factory
        self.state: dict[str, Any] | None = None
        self.monitor: Any = None

    def start(self) -> None:
        """Sample the initial policy on the monitor prompts."""
        texts, has_eos = self.sample(self.prompts)
        self.restore({"base_texts": texts, "base_has_eos": has_eos})

    def restore(self, state: dict[str, Any]) -> None:
        """Continue with the initial answers a checkpoint recorded."""
        self.state = state
        extra = {"gold_fn": self.gold_fn} if self.gold_fn is not None else {}
        if self.disagreement_fn is not None:
            extra["disagreement_fn"] = self.disagreement_fn
        self.monitor = self.factory(
            self.prompts, state["base_texts"], base_has_eos=state["base_has_eos"],
            reward_fn=self.reward_fn, **extra,
        )  # fmt: skip

    def check(self, step: int) -> tuple[dict[str, float], str | None]:
        """Compare the current policy with the initial one: the ``hacking/*`` metrics, and a
        warning when anything is flagged (a token, a drift signal such as answers collapsing to
        nothing, a probe or a proxy-vs-gold divergence; a replacement monitor may only list
        tokens), else None."""
        texts, has_eos = self.sample(self.prompts)
        report = self.monitor.check(texts, tuned_has_eos=has_eos, step=step)
        metrics = {k: float(v) for k, v in report.metrics.items()}
        if report.flagged or getattr(report, "suspected", False):
            return metrics, report.warning or f"flagged: {report.flagged}"
        return metrics, None


def check_for_hacking(
    monitor: LiveMonitor | None, step: int, accelerator: Any
) -> tuple[dict[str, float], str | None, bool]:
    """Run the monitor (it lives on the main process): its ``hacking/*`` metrics, its warning
    (also warned) or None, and whether it warned, which every process learns."""
    from accelerate.utils import broadcast_object_list

    found: dict[str, float] = {}
    warning = None
    if monitor is not None:
        found, warning = monitor.check(step)
        if warning is not None:
            warnings.warn(f"update {step}: hacking monitor: {warning}", stacklevel=2)
    verdict = [warning is not None]
    if accelerator.num_processes > 1:
        broadcast_object_list(verdict)
    return found, warning, bool(verdict[0])


def record_hacking_stop(
    out: Path, step: int, last_good_checkpoint: str | None, warning: str | None
) -> None:
    """The run stopped because the monitor flagged the policy: say so in ``OUT/stopped.json`` and
    in a warning (to the caller of ``train()``), with the checkpoint to go back to."""
    where = last_good_checkpoint or "none (the first check flagged)"
    write_json(out / "stopped.json", {
        "reason": "hacking", "step": step, "last_good_checkpoint": where, "warning": warning,
    })  # fmt: skip
    warnings.warn(
        f"stopped at update {step}: the hacking monitor flagged the policy; "
        f"last good checkpoint: {where}",
        stacklevel=3,
    )
