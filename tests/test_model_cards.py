"""Model cards: every reward model and tuned policy directory gets a README.md that the Hub's own
parser reads (metadata, tags), whose command reproduces the run's settings and whose figures are
the run's; ``--push-to-hub`` uploads through huggingface_hub (its upload recorded, no network)."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from rlhfkit.cards import command_line, hub_id, push_to_hub, reward_model_card
from rlhfkit.errors import RlhfkitError
from rlhfkit.ppo import PPOConfig, PPOTrainer
from rlhfkit.reward import RewardConfig, train_reward_model


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_reward_model_card(tracked_runs):
    rm = tracked_runs["root"] / "rm"
    card = ModelCard.load(rm / "README.md")
    assert card.data.library_name == "rlhfkit"
    assert {"rlhfkit", "rlhf", "reward-model"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "text-classification"
    assert card.data.base_model is None  # a local model trained here is no Hub repo
    ev = json.loads((rm / "eval.json").read_text())
    assert (
        f"| pairwise accuracy (chosen scored above rejected) | {ev['accuracy']:.4f} |" in card.text
    )
    assert (
        f"| held-out rankings / ordered pairs | {ev['n_rankings']} / {ev['n_pairs']} |" in card.text
    )
    assert f"`{tracked_runs['data']}`" in card.text
    from rlhfkit import __version__

    assert f"rlhfkit {__version__}" in card.text
    # The command in the card parses back into the settings the run used.
    (command,) = [line for line in card.text.splitlines() if line.startswith("rlhfkit train-rm")]
    from rlhfkit.cli._common import parse_config

    again = parse_config(RewardConfig, shlex.split(command)[2:], prog="rlhfkit train-rm")
    assert again.report_to == ["tensorboard", "wandb", "trackio", "mlflow"]
    assert again.learning_rate == 3e-3 and again.eval_split == 0.25 and again.logging_steps == 2


def test_policy_card(tracked_runs):
    run = tracked_runs["root"] / "ppo"
    card = ModelCard.load(run / "policy" / "README.md")
    assert card.data.library_name == "rlhfkit"
    assert {"rlhfkit", "rlhf", "ppo"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "text-generation"
    metrics = _metrics(run)
    first, last = metrics[0], metrics[-1]
    for key, label in (
        ("objective/kl", "KL(policy ‖ reference) per response"),
        ("objective/scores", "proxy reward (the reward the policy was trained on)"),
        ("objective/gold_scores", "gold reward (logged, never trained on)"),
    ):
        assert f"| {label} | {first[key]:.4f} | {last[key]:.4f} |" in card.text, key
    # The hacking monitor's checks (every 2 updates of 4), and its warning at the last one.
    checks = [m for m in metrics if "hacking/suspected" in m]
    assert [m["step"] for m in checks] == [2, 4]
    flagged = [m["step"] for m in checks if m["hacking/suspected"]]
    assert f"{len(checks)} check(s), {len(flagged)} flagged" in card.text
    if checks[-1]["hacking/suspected"]:
        assert "possible reward hacking" in card.text.split("At the last check", 1)[1]
    else:
        assert "nothing flagged" in card.text
    assert f"| divergence | {checks[-1]['hacking/divergence']:.4f} |" in card.text
    from rlhfkit.hacking.verdict import LABELS

    assert f"verdict **{LABELS[int(checks[-1]['hacking/verdict'])]}**" in card.text
    assert "| verdict |" not in card.text  # said in words, not as its level 0-2
    assert "(4 prompts)" in card.text  # prompts.txt has four
    # The command parses back into the run's settings (config.json holds them as trained).
    (command,) = [line for line in card.text.splitlines() if line.startswith("rlhfkit ppo")]
    from rlhfkit.cli._common import parse_config

    again = asdict(parse_config(PPOConfig, shlex.split(command)[2:], prog="rlhfkit ppo"))
    saved = json.loads((run / "config.json").read_text())
    assert again == {k: saved[k] for k in again}


def test_hub_ids_from_names_and_the_download_cache(tmp_path):
    assert hub_id("gpt2") == "gpt2" and hub_id("org/name-1.5") == "org/name-1.5"
    assert hub_id(str(tmp_path)) is None  # a local directory trained here
    assert hub_id("prompts.jsonl") is None and hub_id(None) is None
    snap = tmp_path / "hub" / "models--Qwen--Qwen3-0.6B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    assert hub_id(str(snap)) == "Qwen/Qwen3-0.6B"
    data = tmp_path / "hub" / "datasets--Anthropic--hh-rlhf" / "snapshots" / "9f" / "train.jsonl.gz"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"")
    assert hub_id(str(data), "datasets") == "Anthropic/hh-rlhf"
    assert hub_id(str(data), "models") is None
    config = RewardConfig(model=str(snap), data=str(data), out=str(tmp_path / "rm"))
    card = reward_model_card(config, {"note": "no held-out data"})
    assert card.data.base_model == "Qwen/Qwen3-0.6B"
    assert card.data.datasets == ["Anthropic/hh-rlhf"]
    assert "No held-out evaluation: no held-out data." in card.text


def test_command_line_lists_what_differs_from_the_defaults():
    config = PPOConfig(
        policy="p", prompts="my prompts.txt", out="o", kl_coef=0.1, value_norm=False,
        resume=True, report_to=["tensorboard", "wandb"], save_total_limit=None,
    )  # fmt: skip
    assert command_line("rlhfkit ppo", config) == (
        "rlhfkit ppo --policy p --prompts 'my prompts.txt' --out o --kl-coef 0.1 --no-value-norm "
        "--save-total-limit None --resume --report-to tensorboard wandb"
    )


class Recorder:
    """Stands in for the Hub: records create_repo and upload_folder calls."""

    def __init__(self, fail: bool = False):
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def install(self, monkeypatch):
        from huggingface_hub import HfApi

        def create_repo(api, repo_id, **kw):
            self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(api, **kw):
            if self.fail:
                raise OSError("no network")
            files = sorted(
                str(p.relative_to(kw["folder_path"]))
                for p in Path(kw["folder_path"]).rglob("*")
                if p.is_file()
            )
            self.calls.append(("upload_folder", {**kw, "files": files}))

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        return self


def test_push_to_hub_uploads_the_reward_model_with_its_card(tracked_runs, tmp_path, monkeypatch):
    hub = Recorder().install(monkeypatch)
    out = tmp_path / "rm"
    train_reward_model(
        RewardConfig(
            model=str(tracked_runs["lm"]), data=str(tracked_runs["data"]), out=str(out),
            batch_size=16, save_every=2, progress=False, push_to_hub="me/tiny-rm",
        )
    )  # fmt: skip
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][1] == {"repo_id": "me/tiny-rm", "exist_ok": True}
    upload = hub.calls[1][1]
    assert upload["repo_id"] == "me/tiny-rm" and upload["folder_path"] == str(out)
    assert "checkpoints/**" in upload["ignore_patterns"]
    assert {"README.md", "config.json", "model.safetensors", "eval.json"} <= set(upload["files"])
    assert "library_name: rlhfkit" in (out / "README.md").read_text()


def test_push_to_hub_uploads_the_policy_and_its_tensorboard_logs(
    tracked_runs, tmp_path, monkeypatch
):
    hub = Recorder().install(monkeypatch)
    out = tmp_path / "ppo"
    PPOTrainer(
        PPOConfig(
            policy=str(tracked_runs["lm"]), reward_model=str(tracked_runs["root"] / "rm"),
            prompts=str(tracked_runs["prompts"]), out=str(out), total_episodes=16, batch_size=16,
            response_length=4, progress=False, report_to=["tensorboard"], push_to_hub="me/policy",
        )
    ).train()  # fmt: skip
    uploads = [c[1] for c in hub.calls if c[0] == "upload_folder"]
    assert [u["folder_path"] for u in uploads] == [str(out / "policy"), str(out / "runs")]
    assert uploads[1]["path_in_repo"] == "runs"
    assert {"README.md", "config.json", "model.safetensors"} <= set(uploads[0]["files"])
    assert any(f.startswith("events.out.tfevents") for f in uploads[1]["files"])


def test_a_failed_upload_says_where_the_model_is(tmp_path, monkeypatch):
    Recorder(fail=True).install(monkeypatch)
    with pytest.raises(RlhfkitError) as e:
        push_to_hub(tmp_path, "me/x")
    assert "upload failed (OSError: no network)" in str(e.value)
    assert f"saved in {tmp_path}" in str(e.value) and f"hf upload me/x {tmp_path}" in str(e.value)


@pytest.mark.parametrize("kind", ["members", "heads"])
def test_an_ensemble_has_its_card_and_members_cards_and_is_uploaded_whole(
    kind, tracked_runs, tmp_path, monkeypatch
):
    """train-rm --ensemble: OUT/README.md says how the members did and combine, every member is
    a reward model with its own card, and --push-to-hub uploads OUT once (not each member to the
    same repo), without the members' checkpoints or the copy of the training data."""
    from rlhfkit.cards import policy_card
    from rlhfkit.reward.ensemble import train_ensemble

    hub = Recorder().install(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "ens"
    config = RewardConfig(
        model=str(tracked_runs["lm"]), data=str(tracked_runs["data"]), out=str(out),
        eval_split=0.25, batch_size=16, save_every=2, progress=False, ensemble=2,
        ensemble_kind=kind, push_to_hub="me/ens", report_to=["mlflow"],
    )  # fmt: skip
    results = train_ensemble(config)
    from mlflow.tracking import MlflowClient

    client = MlflowClient((tmp_path / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "rlhfkit"]
    runs = {r.info.run_name for r in client.search_runs([experiment.experiment_id])}
    assert runs == ({"ens"} if kind == "heads" else {"ens-member-0", "ens-member-1"})
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    upload = hub.calls[1][1]
    assert upload["folder_path"] == str(out)
    assert {"data/**", "*/checkpoints/**"} <= set(upload["ignore_patterns"])
    assert {"README.md", "ensemble.json", "member-0/README.md", "member-1/model.safetensors"} <= set(upload["files"])  # fmt: skip
    card = ModelCard.load(out / "README.md")
    assert {"reward-model", "ensemble"} <= set(card.data.tags)
    for i, accuracy in enumerate(results["member_accuracy"]):
        assert f"| member-{i} pairwise accuracy | {accuracy:.4f} |" in card.text
    assert f"| `worst` objective pairwise accuracy | {results['accuracy_worst']:.4f} |" in card.text
    assert f"{results['disagreement_std']:.4f}" in card.text
    for i in range(2):
        member = ModelCard.load(out / f"member-{i}" / "README.md")
        assert "reward-model" in member.data.tags and f"Reward model member-{i}" in member.text
        ev = json.loads((out / f"member-{i}" / "eval.json").read_text())
        assert f"(chosen scored above rejected) | {ev['accuracy']:.4f} |" in member.text
        if kind == "heads":
            assert "one member of an ensemble of 2 (heads)" in member.text
    # A policy tuned against the ensemble says so, with the objective.
    ppo = PPOConfig(policy="p", prompts="q", out=str(tmp_path / "run"), reward_model=str(out),
                    ensemble_objective="worst", hacking_check_every=0)  # fmt: skip
    assert "`" + str(out) + "` (an ensemble; objective `worst`)" in policy_card(ppo).text
