"""Reward-model ensembles (Coste et al. 2023; Eisenstein et al. 2023): M reward models whose
disagreement says where the reward is uncertain, and a combined reward PPO or best-of-n can
optimize that pays less for what only some members like.

Two kinds, both trained by ``rlhfkit train-rm --ensemble M``:

- ``members`` (default): M independent reward models, the same backbone trained with seeds
  ``seed, seed+1, ...`` (head initialization and data order differ), optionally each on its own
  bootstrap resample of the training rankings (``--bootstrap``). M times the cost of one.
- ``heads`` (``--ensemble-kind heads``): one trunk with M one-output heads, trained together (the
  trunk learns from the mean of the heads' losses; each head sees its own bootstrap weights with
  ``--bootstrap``). About the cost of one reward model; the members share every error the trunk
  makes.

An ensemble is one directory that rlhfkit loads (:meth:`RewardEnsemble.from_pretrained`):
``ensemble.json`` names the kind and the members, ``member-0/``, ``member-1/``, ... are each an
ordinary reward-model directory (``AutoModelForSequenceClassification``); ``eval.json`` holds
each member's held-out accuracy, the combined objectives' accuracy and the members' disagreement.
Scores are each member's normalized score (mean 0, std 1 on the reference responses), so the
members are on one scale before they are combined (:func:`rlhfkit.losses.ensemble_reward`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhfkit.errors import ConfigError
from rlhfkit.losses import ENSEMBLE_OBJECTIVES, ensemble_reward

ENSEMBLE_FILE = "ensemble.json"
FORMAT_VERSION = 1


def is_ensemble(path: str | Path) -> bool:
    """Whether ``path`` is an ensemble directory (it holds ``ensemble.json``)."""
    return (Path(path) / ENSEMBLE_FILE).is_file()


class RewardEnsemble:
    """M reward models scored together: :meth:`score_members` gives every member's score,
    :meth:`score` (and calling the object) the ``objective`` that combines them."""

    def __init__(
        self, members: Sequence[Any], objective: str = "mean", uwo_lambda: float = 1.0,
        kind: str = "members",
    ):  # fmt: skip
        if objective not in ENSEMBLE_OBJECTIVES:
            raise ConfigError(f"--ensemble-objective must be one of {', '.join(ENSEMBLE_OBJECTIVES)}")  # fmt: skip
        if uwo_lambda < 0:
            raise ConfigError("--uwo-lambda must be >= 0")
        if len(members) < 2:
            raise ConfigError("an ensemble needs at least 2 members")
        self.members = list(members)
        self.objective, self.uwo_lambda, self.kind = objective, uwo_lambda, kind

    @classmethod
    def from_pretrained(
        cls, path: str | Path, objective: str = "mean", uwo_lambda: float = 1.0,
        option: str = "--reward-model",
    ) -> RewardEnsemble:  # fmt: skip
        from rlhfkit.reward.model import RewardModel

        path = Path(path)
        try:
            spec = json.loads((path / ENSEMBLE_FILE).read_text(encoding="utf-8"))
            names = list(spec["members"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{option} {path}: unreadable {ENSEMBLE_FILE} ({e})") from None
        members = [
            RewardModel.from_pretrained(path / n, trained=True, option=option) for n in names
        ]
        return cls(members, objective, uwo_lambda, spec.get("kind", "members"))

    def to(self, device: Any) -> RewardEnsemble:
        for m in self.members:
            m.to(device)
        return self

    @property
    def model(self) -> None:
        """No single model: critics that read a reward model's trunk need one reward model."""
        return None

    @torch.no_grad()
    def score_members(
        self, prompts: Sequence[Any], responses: Sequence[Any], batch_size: int = 32
    ) -> torch.Tensor:
        """Every member's normalized score: (M, N) on the CPU."""
        return torch.stack([m.score(prompts, responses, batch_size) for m in self.members])

    def score(
        self, prompts: Sequence[Any], responses: Sequence[Any], batch_size: int = 32
    ) -> torch.Tensor:
        """The combined score (N,): :func:`rlhfkit.losses.ensemble_reward` of the members'."""
        return ensemble_reward(
            self.score_members(prompts, responses, batch_size), self.objective, self.uwo_lambda
        )

    def __call__(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[float]:
        return self.score(prompts, responses).tolist()


def load_reward(path: str | Path, objective: str = "mean", uwo_lambda: float = 1.0,
                option: str = "--reward-model") -> Any:  # fmt: skip
    """A reward model or an ensemble, whichever ``path`` holds."""
    from rlhfkit.reward.model import RewardModel

    if is_ensemble(path):
        return RewardEnsemble.from_pretrained(path, objective, uwo_lambda, option)
    return RewardModel.from_pretrained(path, trained=True, option=option)


# ------------------------------------------------------------------------------------ training


def train_ensemble(config: Any) -> dict[str, Any]:
    """``train-rm --ensemble M``: M members (see the module docstring), saved into ``config.out``
    as an ensemble directory; returns the ensemble's evaluation (its ``eval.json``)."""
    import dataclasses

    from rlhfkit.data import read_preferences, write_rankings
    from rlhfkit.loading import check_model_source
    from rlhfkit.reward.batching import split_by_prompt
    from rlhfkit.reward.training import train_reward_model
    from rlhfkit.runtime.io import write_json

    check_model_source(config.model, "--model")
    out = Path(config.out)
    m = config.ensemble
    # One held-out split for every member, so that their evaluations compare.
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    prefs = list(read_preferences(config.data, format=config.format, skip_invalid=config.skip_invalid))  # fmt: skip
    if config.eval_data is not None:
        train, held = prefs, list(read_preferences(config.eval_data, format=config.format))
    else:
        train, held = split_by_prompt(prefs, config.eval_split, config.seed)
    write_rankings(data / "eval.jsonl", held)
    common = dict(eval_data=str(data / "eval.jsonl") if held else None, eval_split=0.0, format="rankings")  # fmt: skip
    if config.ensemble_kind == "heads":
        # one trunk, M heads (reward/training.py), saved as OUT/member-i by the trainer; each
        # head's bootstrap is a weight per ranking (the online bootstrap)
        write_rankings(data / "train.jsonl", train)
        train_reward_model(dataclasses.replace(config, data=str(data / "train.jsonl"), **common))
    else:
        for i in range(m):
            rows = train
            if config.bootstrap:  # each member its own resample of the training rankings
                rows = random.Random(config.seed + 1_000_003 * (i + 1)).choices(train, k=len(train))
            write_rankings(data / f"train-{i}.jsonl", rows)
            train_reward_model(dataclasses.replace(
                config, data=str(data / f"train-{i}.jsonl"), out=str(out / f"member-{i}"),
                seed=config.seed + i, ensemble=1, **common,
            ))  # fmt: skip
    names = [f"member-{i}" for i in range(m)]
    write_json(out / ENSEMBLE_FILE, {
        "kind": config.ensemble_kind, "members": names, "seeds": [config.seed + i for i in range(m)],
        "bootstrap": config.bootstrap, "format_version": FORMAT_VERSION,
    })  # fmt: skip
    return evaluate_ensemble(out, config)


def evaluate_ensemble(out: Path, config: Any) -> dict[str, Any]:
    """Each member's held-out accuracy, the accuracy of every objective, and the disagreement:
    the mean over held-out responses of the members' std, and the share of held-out pairs the
    members do not all order the same way."""
    from rlhfkit.data import read_preferences
    from rlhfkit.data.pairs import pair_agreement
    from rlhfkit.runtime.io import write_json

    held_path = out / "data" / "eval.jsonl"
    members_eval = [
        json.loads((out / f"member-{i}" / "eval.json").read_text(encoding="utf-8"))
        if (out / f"member-{i}" / "eval.json").is_file() else {}
        for i in range(config.ensemble)
    ]  # fmt: skip
    results: dict[str, Any] = {
        "kind": config.ensemble_kind,
        "members": config.ensemble,
        "bootstrap": config.bootstrap,
        "member_accuracy": [e.get("accuracy") for e in members_eval],
    }
    held = list(read_preferences(held_path)) if held_path.is_file() else []
    if not held:
        results["note"] = "no held-out data"
        write_json(out / "eval.json", results)
        return results
    ens = RewardEnsemble.from_pretrained(out)
    prompts = [r.model_prompt for r in held for _ in r.responses]
    texts = [x.model_input for r in held for x in r.responses]
    scores = ens.score_members(prompts, texts, config.eval_batch_size)  # (M, N)
    pos, per_item = 0, []
    for r in held:
        k = len(r.responses)
        per_item.append((scores[:, pos : pos + k], [-x for x in r.ranks()]))
        pos += k
    for name in ENSEMBLE_OBJECTIVES:
        right = total = 0
        for s, ref in per_item:
            a, n = pair_agreement(ensemble_reward(s, name, 1.0).tolist(), ref)
            right, total = right + a, total + n
        results[f"accuracy_{name}"] = right / total if total else None
    split = total_pairs = 0
    for s, _ in per_item:
        k = s.shape[1]
        for i in range(k):
            for j in range(i + 1, k):
                signs = torch.sign(s[:, i] - s[:, j])
                total_pairs += 1
                split += bool((signs != signs[0]).any())
    results["disagreement_std"] = float(scores.std(0, unbiased=False).mean())
    results["disagreement_pairs"] = split / total_pairs if total_pairs else None
    results["n_rankings"] = len(held)
    write_json(out / "eval.json", results)
    return results
