"""Model cards for the models rlhfkit saves, and uploading them to the Hugging Face Hub.

Every reward-model directory (``train-rm``'s OUT) and tuned policy (``ppo``'s OUT/policy) gets a
``README.md`` in the Hub's model-card format (``huggingface_hub.ModelCard``): YAML metadata
(``library_name: rlhfkit``, ``base_model`` and ``datasets`` when they are Hub repos, tags) and a body
with the command that reproduces the run, its data, its key metrics, the hacking monitor's findings
and the versions. ``--push-to-hub REPO`` uploads the directory with ``huggingface_hub``. See
docs/model-cards.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfkit.cards.common import CARD_FILE, command_line, hub_id
from rlhfkit.cards.policy import policy_card
from rlhfkit.cards.reward import ensemble_card, reward_model_card
from rlhfkit.errors import RlhfkitError

__all__ = [
    "CARD_FILE",
    "command_line",
    "ensemble_card",
    "hub_id",
    "policy_card",
    "publish_policy",
    "publish_reward_model",
    "push_to_hub",
    "reward_model_card",
    "write_card",
]


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
