"""The cards of a reward model (``train-rm``'s OUT) and of a reward-model ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlhfkit.cards.common import _card, _number, _table, _versions, command_line, hub_id


def _reward_datasets(config: Any) -> list[str]:
    """The Hub data sets a reward model learned from and was evaluated on (none for local files)."""
    return [d for d in (hub_id(config.data, "datasets"), hub_id(config.eval_data, "datasets")) if d]


def reward_model_card(
    config: Any, results: dict[str, Any], directory: str | Path | None = None
) -> Any:
    """The card of a reward model trained with ``config`` (``RewardConfig``) into ``directory``
    (default ``config.out``; a member of an ensemble has its own); ``results`` is its
    ``eval.json``."""
    from rlhfkit import __version__

    base = hub_id(config.model)
    datasets = _reward_datasets(config)
    name = Path(directory or config.out).resolve().name
    member = (
        f" It is one member of an ensemble of {config.ensemble} ({config.ensemble_kind}) that the "
        f"command below trained into `{Path(config.out).resolve().name}` (its card says how the "
        "members combine)."
        if config.ensemble > 1
        else ""
    )
    held_out = results.get("eval_data") or "none"
    if results.get("n_pairs"):
        metrics = _table(
            [
                ("pairwise accuracy (chosen scored above rejected)", _number(results.get("accuracy"))),
                ("top-1 accuracy (the best response scored highest)", _number(results.get("top1_accuracy"))),
                ("mean margin r(chosen) − r(rejected), normalized scores", _number(results.get("margin"))),
                ("Bradley-Terry loss", _number(results.get("loss"))),
                ("held-out rankings / ordered pairs", f"{results.get('n_rankings')} / {results.get('n_pairs')}"),
            ],
            ("held-out metric", "value"),
        )  # fmt: skip
    else:
        metrics = f"No held-out evaluation: {results.get('note') or held_out}."
    data = _table(
        [
            ("training data", f"`{config.data}` (format: {config.format})"),
            ("held out", f"`{config.eval_data}`" if config.eval_data else str(held_out)),
            ("training rankings", str(results.get("train_prompts", "–"))),
            ("ordered pairs per epoch", str(results.get("train_pairs_per_epoch", "–"))),
            ("epochs × steps", f"{config.epochs} epoch(s), {results.get('steps', '–')} steps of {config.batch_size} rankings"),
            ("learning rate", f"{config.learning_rate:g} ({config.lr_scheduler_type})"),
        ],
        ("", ""),
    )  # fmt: skip
    use = f"""```python
from rlhfkit.reward import RewardModel

rm = RewardModel.from_pretrained("{name}")  # this directory, or its Hub repo
print(rm.score(["Explain rainbows in simple terms."], ["Light bends in raindrops."]))
```

Plain `transformers` loads it too (`AutoModelForSequenceClassification`, one output); rlhfkit's
`score` adds the normalization (gain and bias in `config.json`'s `rlhfkit` entry) and the input
format the model was trained on."""
    return _card(
        {
            "library_name": "rlhfkit",
            "base_model": base,
            "datasets": datasets,
            "pipeline_tag": "text-classification",
            "tags": ["rlhfkit", "rlhf", "reward-model", "bradley-terry"],
        },
        f"Reward model {name}",
        [
            ("Training command", f"```bash\n{command_line('rlhfkit train-rm', config)}\n```"),
            ("Data", data),
            ("Evaluation", metrics),
            ("Use", use),
            ("Framework versions", _versions()),
        ],
        f"A reward model trained with [rlhfkit](https://pypi.org/project/rlhfkit/) {__version__} "
        f"from `{config.model}` on ranked responses, ranking-natively: every response of a ranking "
        "forwarded once, the Bradley-Terry loss over all its ordered pairs. It gives one scalar per "
        "(prompt, response), higher for responses people prefer." + member,
    )


def ensemble_card(config: Any, results: dict[str, Any]) -> Any:
    """The card of a reward-model ensemble (``train-rm --ensemble M``, ``config`` its
    ``RewardConfig``); ``results`` is the ensemble's ``eval.json``: each member's accuracy, each
    objective's, the members' disagreement."""
    from rlhfkit import __version__

    name = Path(config.out).resolve().name
    if results.get("n_rankings"):
        rows = [(f"member-{i} pairwise accuracy", _number(a)) for i, a in enumerate(results.get("member_accuracy") or [])]  # fmt: skip
        rows += [(f"`{o}` objective pairwise accuracy", _number(results.get(f"accuracy_{o}"))) for o in ("mean", "worst", "uwo")]  # fmt: skip
        rows += [
            ("disagreement: members' score std, mean over responses", _number(results.get("disagreement_std"))),
            ("disagreement: share of pairs the members order differently", _number(results.get("disagreement_pairs"))),
            ("held-out rankings", str(results["n_rankings"])),
        ]  # fmt: skip
        metrics = _table(rows, ("held-out metric", "value"))
    else:
        metrics = f"No held-out evaluation: {results.get('note') or 'no held-out data'}."
    kind = (
        f"{config.ensemble} heads on one trunk, trained together"
        if config.ensemble_kind == "heads"
        else f"{config.ensemble} independently trained reward models (seeds {config.seed}…{config.seed + config.ensemble - 1})"
    ) + (", each on its own bootstrap resample" if config.bootstrap else "")  # fmt: skip
    members = (
        f"{kind}; training data `{config.data}`, the same held-out rankings for every member "
        "(`data/eval.jsonl`)."
    )
    use = f"""```python
from rlhfkit.reward.ensemble import RewardEnsemble

ens = RewardEnsemble.from_pretrained("{name}", objective="worst")  # or mean, uwo
print(ens.score(["Explain rainbows in simple terms."], ["Light bends in raindrops."]))
```

or PPO against it: `rlhfkit ppo --reward-model {name} --ensemble-objective worst …`. Each
`member-i/` is an ordinary reward model with its own card."""
    return _card(
        {
            "library_name": "rlhfkit",
            "base_model": hub_id(config.model),
            "datasets": _reward_datasets(config),
            "tags": ["rlhfkit", "rlhf", "reward-model", "bradley-terry", "ensemble"],
        },
        f"Reward-model ensemble {name}",
        [
            ("Training command", f"```bash\n{command_line('rlhfkit train-rm', config)}\n```"),
            ("Members", members),
            ("Evaluation", metrics),
            ("Use", use),
            ("Framework versions", _versions()),
        ],
        f"An ensemble of reward models trained with [rlhfkit](https://pypi.org/project/rlhfkit/) "
        f"{__version__} from `{config.model}` (Coste et al. 2023): PPO against the members' "
        "worst or uncertainty-weighted score over-optimizes less than against one model, and "
        "the members' disagreement on a policy's answers is a sign of reward hacking.",
    )
