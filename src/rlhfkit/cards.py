"""Model cards for the models rlhfkit saves, and uploading them to the Hugging Face Hub.

Every reward-model directory (``train-rm``'s OUT) and tuned policy (``ppo``'s OUT/policy) gets a
``README.md`` in the Hub's model-card format (``huggingface_hub.ModelCard``): YAML metadata
(``library_name: rlhfkit``, ``base_model`` and ``datasets`` when they are Hub repos, tags) and a body
with the command that reproduces the run, its data, its key metrics, the hacking monitor's findings
and the versions. ``--push-to-hub REPO`` uploads the directory with ``huggingface_hub``. See
docs/model-cards.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfkit.errors import RlhfkitError

CARD_FILE = "README.md"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_CACHE_DIR = re.compile(r"^(models|datasets)--(.+)$")


def hub_id(name: str | None, kind: str = "models") -> str | None:
    """The Hub repo a model or data set came from, or None when that is not known.

    A name that is no local path is taken as a Hub id (``gpt2``, ``org/name``); a local path is one
    only inside the Hub's download cache (``…/models--org--name/snapshots/…``, ``kind`` ``models``
    or ``datasets``); any other local path (a model trained here) has none.
    """
    if not name:
        return None
    path = Path(name).expanduser()
    if path.exists():
        for part in reversed(path.resolve().parts):
            m = _CACHE_DIR.match(part)
            if m and m.group(1) == kind:
                return m.group(2).replace("--", "/")
        return None
    return name if _HUB_ID.match(name) and not name.endswith((".jsonl", ".json", ".gz")) else None


def command_line(prog: str, config: Any) -> str:
    """The command that makes ``config`` (a dataclass whose fields are the command's options):
    ``prog`` with every option that differs from its default, in the fields' order."""
    words: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return " ".join([prog, *(shlex.quote(w) for w in words)])


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from rlhfkit import __version__

    parts = [f"rlhfkit {__version__}"]
    for pkg in ("transformers", "torch", "accelerate"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def _number(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _card(metadata: dict[str, Any], title: str, sections: list[tuple[str, str]], intro: str) -> Any:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**{k: v for k, v in metadata.items() if v})
    body = [f"# {title}", "", intro, ""]
    for heading, text in sections:
        body += [f"## {heading}", "", text.strip(), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


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


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def policy_card(
    config: Any, n_prompts: int | None = None, hacking_warning: str | None = None
) -> Any:
    """The card of the policy a PPO run with ``config`` (``PPOConfig``) saved: its metrics come
    from ``OUT/metrics.jsonl``; ``hacking_warning`` is the monitor's warning at its last check."""
    from rlhfkit import __version__
    from rlhfkit.hacking.verdict import LABELS
    from rlhfkit.reward.ensemble import is_ensemble

    out = Path(config.out)
    records = [r for r in _read_metrics(out / "metrics.jsonl") if "objective/kl" in r]
    first, last = (records[0], records[-1]) if records else ({}, {})
    rows = []
    for key, label in (
        ("objective/scores", "proxy reward (the reward the policy was trained on)"),
        ("objective/gold_scores", "gold reward (logged, never trained on)"),
        ("objective/kl", "KL(policy ‖ reference) per response"),
        ("objective/kl_coef", "β"),
        ("response/length_mean", "response length (tokens)"),
        ("reward/ensemble_std", "ensemble disagreement (std of the members' scores)"),
    ):
        if key in last:
            rows.append((label, _number(first.get(key)), _number(last.get(key))))
    metrics = (
        _table(rows, ("metric", "first update", f"last update ({last.get('step')})"))
        if rows
        else "No update was logged."
    )
    checks = [r for r in records if "hacking/suspected" in r]
    if not config.hacking_check_every:
        hacking = (
            "The live hacking monitor was off (`--hacking-check-every 0`). Compare this policy's "
            "outputs with the base policy's with `rlhfkit detect`."
        )
    elif not checks:
        hacking = "The live hacking monitor made no check (the run was shorter than one interval)."
    else:
        flagged = [r["step"] for r in checks if r["hacking/suspected"] > 0]
        hacking = (
            f"The live hacking monitor compared the policy's answers with the base policy's every "
            f"{config.hacking_check_every} updates: {len(checks)} check(s), "
            f"{len(flagged)} flagged" + (f" (updates {', '.join(map(str, flagged))})" if flagged else "")
            + f". At the last check (update {checks[-1]['step']}): "
            + (f"**{hacking_warning}**" if hacking_warning else "nothing flagged")
            + (f"; verdict **{LABELS[int(checks[-1]['hacking/verdict'])]}**" if "hacking/verdict" in checks[-1] else "")
            + ".\n\n"
            + _table(
                [(k.split("/", 1)[1], _number(v)) for k, v in checks[-1].items() if k.startswith("hacking/") and k != "hacking/verdict"],
                ("signal at the last check", "value"),
            )
            + "\n\nThe signals are explained in rlhfkit's docs/hacking.md."
        )  # fmt: skip
    rewards = (
        " and ".join(f"`{x}`" for x in (config.reward_model, config.reward_fn) if x)
        or "a reward given in Python"
    )
    if config.reward_model and is_ensemble(config.reward_model):
        rewards += f" (an ensemble; objective `{config.ensemble_objective}`)"
    data = _table(
        [
            ("prompts", f"`{config.prompts}`" + (f" ({n_prompts} prompts)" if n_prompts else "")),
            ("reward", rewards),
            ("episodes × updates", f"{last.get('episode', '–')} episodes in {last.get('step', '–')} updates of {config.batch_size}"),
        ],
        ("", ""),
    )  # fmt: skip
    use = f"""```python
from transformers import pipeline

generate = pipeline("text-generation", model="{out.resolve().name}/policy")  # or its Hub repo
print(generate("Explain rainbows in simple terms.", max_new_tokens={config.response_length}))
```"""
    return _card(
        {
            "library_name": "rlhfkit",
            "base_model": hub_id(config.policy),
            "datasets": [d for d in (hub_id(config.prompts, "datasets"),) if d],
            "pipeline_tag": "text-generation",
            "tags": ["rlhfkit", "rlhf", "ppo"] + (["lora"] if config.lora_r else []),
        },
        f"Policy {out.resolve().name}",
        [
            ("Training command", f"```bash\n{command_line('rlhfkit ppo', config)}\n```"),
            ("Data", data),
            ("Metrics", metrics),
            ("Reward hacking", hacking),
            ("Use", use),
            ("Framework versions", _versions()),
        ],
        f"`{config.policy}` tuned with PPO and a KL penalty (reward − β·KL(policy ‖ reference)) "
        f"by [rlhfkit](https://pypi.org/project/rlhfkit/) {__version__}. A proxy reward that rose "
        "is not proof of a better model: read the KL, the gold reward where there is one, and the "
        "hacking monitor's findings below.",
    )


def write_card(model_dir: str | Path, card: Any) -> Path:
    """Write ``card`` as ``model_dir/README.md`` (atomically); returns the path."""
    from rlhfkit.runtime.io import atomic_open

    path = Path(model_dir) / CARD_FILE
    with atomic_open(path) as f:
        f.write(str(card))
    return path


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    extra_folders: dict[str, Path] | None = None,
    ignore_patterns: Sequence[str] = ("checkpoints/**", ".*"),
) -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``folder`` (without checkpoints and
    hidden files), then each ``extra_folders`` entry into its path in the repo. Uses the token of
    ``hf auth login`` or ``HF_TOKEN``. Returns the repo's URL; a failure is a
    :class:`RlhfkitError` that says the model is still in ``folder``."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), ignore_patterns=list(ignore_patterns),
            commit_message="Upload model trained with rlhfkit",
        )  # fmt: skip
        for path_in_repo, extra in (extra_folders or {}).items():
            if Path(extra).is_dir():
                api.upload_folder(
                    repo_id=repo_id, folder_path=str(extra), path_in_repo=path_in_repo,
                    commit_message=f"Upload {path_in_repo}",
                )  # fmt: skip
    except Exception as e:  # network, authentication, offline mode: all mean "not uploaded"
        raise RlhfkitError(
            f"--push-to-hub {repo_id}: upload failed ({type(e).__name__}: {e}); the model is "
            f"saved in {folder}: upload it later with `hf upload {repo_id} {folder}`"
        ) from None
    return str(url)


def publish_reward_model(config: Any, results: dict[str, Any]) -> None:
    """After ``train-rm`` saved OUT: its model card, and the upload with ``--push-to-hub``. An
    ensemble (``--ensemble M``) is uploaded whole, its members' checkpoints and its copy of the
    training data left out."""
    if config.ensemble > 1:
        write_card(config.out, ensemble_card(config, results))
        ignore = ("checkpoints/**", "*/checkpoints/**", "data/**", ".*")
    else:
        write_card(config.out, reward_model_card(config, results))
        ignore = ("checkpoints/**", ".*")
    if config.push_to_hub:
        push_to_hub(config.out, config.push_to_hub, ignore_patterns=ignore)


def publish_policy(
    config: Any, n_prompts: int | None = None, hacking_warning: str | None = None
) -> None:
    """After ``ppo`` saved OUT/policy: its model card, and with ``--push-to-hub`` the upload of
    the policy with the run's TensorBoard logs (OUT/runs, shown on the Hub's metrics tab)."""
    policy = Path(config.out) / "policy"
    write_card(policy, policy_card(config, n_prompts, hacking_warning))
    if config.push_to_hub:
        push_to_hub(policy, config.push_to_hub, extra_folders={"runs": Path(config.out) / "runs"})
