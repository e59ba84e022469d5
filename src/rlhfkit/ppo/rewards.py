"""Where PPO's reward comes from: a reward model, a Python reward function, or both (summed), plus
the adjustments applied to the score (clipping, the missing-EOS penalty), and an optional gold
reward that is only logged.

A reward function is ``fn(prompts: list[str], responses: list[str]) -> list[float]`` given as
``FILE.py:NAME`` or ``module:NAME``. It receives the prompts' text; a reward model receives the
prompts as they were read (a conversation stays one, for its chat template) and re-tokenizes the
decoded responses with its own tokenizer.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.chat import Prompt, as_text
from rlhfkit.errors import ConfigError
from rlhfkit.losses import ensemble_reward

RewardFn = Callable[[list[str], list[str]], Sequence[float]]


def load_reward_fn(spec: str) -> RewardFn:
    """Resolve ``FILE.py:NAME`` or ``module:NAME`` to a callable."""
    if ":" not in spec:
        raise ConfigError(f"reward function {spec!r}: expected FILE.py:NAME or module:NAME")
    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"reward function file not found: {path}")
        mod_name = f"rlhfkit_reward_fn_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"{path}: cannot be imported as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"reward function {spec!r}: cannot import {target!r} ({e})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"reward function {spec!r}: {target} has no callable named {name!r}")
    return fn


def call_reward_fn(
    fn: RewardFn, prompts: list[str], responses: list[str], what: str
) -> torch.Tensor:
    """Call a reward function and check it returned one number per response."""
    values = fn(list(prompts), list(responses))
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().reshape(-1).tolist()
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must return a list of numbers") from None
    if len(values) != len(responses):
        raise ConfigError(f"{what} returned {len(values)} values for {len(responses)} responses")
    return torch.tensor(values, dtype=torch.float32)


@dataclass
class RewardSources:
    """What scores a batch: ``reward_model`` (a ``RewardModel``) and/or ``reward_fn``, summed;
    ``gold_fn`` is only logged (``objective/gold_scores``), never trained on."""

    reward_model: Any | None = None
    reward_fn: RewardFn | None = None
    gold_fn: RewardFn | None = None
    reward_clip: float | None = None
    missing_eos_penalty: float | None = None

    def score(
        self, prompts: list[Prompt], texts: list[str], has_stop: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scores (B,) on the CPU, plus the separate parts for logging (``objective/rm_scores``,
        ``objective/fn_scores`` when both sources are used; ``objective/gold_scores``)."""
        parts: dict[str, torch.Tensor] = {}
        scores = torch.zeros(len(texts))
        text_prompts = [as_text(p) for p in prompts]
        if self.reward_model is not None:
            rm, member_parts = self._reward_model_scores(prompts, texts)
            parts["objective/rm_scores"] = rm
            scores = scores + rm
        if self.reward_fn is not None:
            fn = call_reward_fn(self.reward_fn, text_prompts, texts, "the reward function")
            parts["objective/fn_scores"] = fn
            scores = scores + fn
        if len(parts) == 1:
            parts = {}  # a single source is objective/scores itself
        if self.reward_model is not None:
            parts.update(member_parts)
        if self.gold_fn is not None:
            parts["objective/gold_scores"] = call_reward_fn(
                self.gold_fn, text_prompts, texts, "the gold reward function"
            )
        if self.reward_clip is not None:
            scores = scores.clamp(-self.reward_clip, self.reward_clip)
        if self.missing_eos_penalty is not None:
            scores = scores - self.missing_eos_penalty * (~has_stop.cpu()).float()
        return scores, parts

    def _reward_model_scores(
        self, prompts: list[Prompt], texts: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reward model's score (N,); with an ensemble, its combined objective, and for the
        logs each member's score and the members' spread per response (``reward/ensemble_std``)."""
        rm = self.reward_model
        if not hasattr(rm, "score_members"):
            return rm.score(prompts, texts).float().cpu(), {}
        members = rm.score_members(prompts, texts).float().cpu()  # (M, N)
        combined = ensemble_reward(members, rm.objective, rm.uwo_lambda)
        logs = {f"reward/member_{i}": m for i, m in enumerate(members)}
        logs["reward/ensemble_std"] = members.std(0, unbiased=False)
        return combined, logs

    def disagreement_fn(self, input_of_text: dict[str, Prompt]) -> RewardFn | None:
        """With an ensemble: each response's spread between the members (their std), as a text
        reward function for the hacking monitor; else None."""
        rm = self.reward_model
        if not hasattr(rm, "score_members"):
            return None

        def spread(prompts: list[str], responses: list[str]) -> list[float]:
            inputs = [input_of_text.get(p, p) for p in prompts]
            return rm.score_members(inputs, responses).float().std(0, unbiased=False).tolist()

        return spread

    def as_reward_fn(self, input_of_text: dict[str, Prompt]) -> RewardFn:
        """The summed reward (no clipping, no penalty) as a text reward function, for the hacking
        monitor: each prompt text is mapped back to the prompt the reward model reads."""

        def combined(prompts: list[str], responses: list[str]) -> list[float]:
            total = torch.zeros(len(responses))
            if self.reward_model is not None:
                inputs = [input_of_text.get(p, p) for p in prompts]
                total += self.reward_model.score(inputs, responses).float().cpu()
            if self.reward_fn is not None:
                total += call_reward_fn(self.reward_fn, prompts, responses, "the reward function")
            return total.tolist()

        return combined
