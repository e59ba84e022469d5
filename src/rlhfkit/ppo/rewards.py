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
from rlhfkit.loading import fuse_activations
from rlhfkit.losses import ensemble_reward
from rlhfkit.ppo.config import PPOConfig
from rlhfkit.ppo.critic import trunk_of

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


def build_reward_sources(
    cfg: PPOConfig, device: Any, shard: Callable[..., Any] | None = None, *,
    reward_model: Any | None = None, reward_fn: RewardFn | None = None,
    gold_fn: RewardFn | None = None,
) -> RewardSources:  # fmt: skip
    """A run's reward sources: the objects given, else those the config names. A reward model (or
    an ensemble of them, ``train-rm --ensemble``) is loaded, put on ``device`` and, with
    ``shard`` (``--fsdp``), sharded; reward functions are imported. Needs one reward to train on."""
    if reward_model is None and cfg.reward_model is not None:
        from rlhfkit.reward.ensemble import load_reward

        reward_model = load_reward(
            cfg.reward_model, cfg.ensemble_objective, cfg.uwo_lambda, "--reward-model"
        )
        for member in getattr(reward_model, "members", [reward_model]):
            fuse_activations(member.model)  # ours: same function, one kernel
    if reward_model is not None:
        reward_model.to(device)
        if shard is not None:  # each trunk is called on its own by the frozen critics
            for member in getattr(reward_model, "members", [reward_model]):
                shard(member.model, units=[trunk_of(member.model)])
    sources = RewardSources(
        reward_model=reward_model,
        reward_fn=reward_fn or (load_reward_fn(cfg.reward_fn) if cfg.reward_fn else None),
        gold_fn=gold_fn or (load_reward_fn(cfg.gold_reward_fn) if cfg.gold_reward_fn else None),
        reward_clip=cfg.reward_clip,
        missing_eos_penalty=cfg.missing_eos_penalty,
    )
    if reward_model is None and sources.reward_fn is None:
        raise ConfigError("give --reward-model and/or --reward-fn")
    return sources
