"""Reward-model ensembles end to end (docs/hacking.md, "Mitigations"): the objectives'
formulas, ``train-rm --ensemble`` (independent members with a bootstrap, heads on one trunk),
and an ensemble in ``score``, ``ppo`` and ``best-of-n`` with ``--ensemble-objective``."""

from __future__ import annotations

import json

import pytest
import torch

from rlhfkit.cli import main as cli
from rlhfkit.losses import ensemble_reward
from rlhfkit.reward.ensemble import RewardEnsemble


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_ensemble_objectives_are_coste_et_al():
    members = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 3.0]])  # (M=2, N=3)
    assert ensemble_reward(members, "mean").tolist() == [2.0, 1.0, 3.0]
    assert ensemble_reward(members, "worst").tolist() == [1.0, 0.0, 3.0]
    # mean − λ·Var over members (population variance: 1, 1, 0)
    assert ensemble_reward(members, "uwo", 1.0).tolist() == [1.0, 0.0, 3.0]
    assert ensemble_reward(members, "uwo", 0.5).tolist() == [1.5, 0.5, 3.0]
    with pytest.raises(ValueError, match="ensemble objective"):
        ensemble_reward(members, "median")


@pytest.fixture(scope="module")
def ensemble(tracked_runs, tmp_path_factory):
    """``train-rm --ensemble 3 --bootstrap`` on the tracked runs' rankings."""
    out = tmp_path_factory.mktemp("ensemble") / "ens"
    code = cli([
        "train-rm", "--model", str(tracked_runs["lm"]), "--data", str(tracked_runs["data"]),
        "--out", str(out), "--ensemble", "3", "--bootstrap", "--eval-split", "0.25",
        "--batch-size", "8", "--learning-rate", "3e-3", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    return out


def test_train_rm_ensemble_of_members(ensemble, tracked_runs):
    from transformers import AutoModelForSequenceClassification

    spec = json.loads((ensemble / "ensemble.json").read_text())
    assert spec["kind"] == "members" and spec["members"] == ["member-0", "member-1", "member-2"]
    assert spec["seeds"] == [0, 1, 2] and spec["bootstrap"] is True
    # each member is an ordinary Hugging Face reward model
    for name in spec["members"]:
        model = AutoModelForSequenceClassification.from_pretrained(ensemble / name)
        assert model.config.num_labels == 1
    # the bootstrap gives each member its own resample of the same training rankings
    trains = [(ensemble / "data" / f"train-{i}.jsonl").read_text() for i in range(3)]
    assert len(set(trains)) == 3
    assert all(t.count("\n") == trains[0].count("\n") for t in trains)
    held = _rows(ensemble / "data" / "eval.jsonl")
    ev = json.loads((ensemble / "eval.json").read_text())
    assert ev["n_rankings"] == len(held) > 0 and len(ev["member_accuracy"]) == 3
    for key in ("accuracy_mean", "accuracy_worst", "accuracy_uwo", "disagreement_pairs"):
        assert 0.0 <= ev[key] <= 1.0
    assert ev["disagreement_std"] > 0  # members with other seeds and data score differently
    # the members' own held-out evaluation is on the same split: eval.json per member
    assert all((ensemble / n / "eval.json").is_file() for n in spec["members"])


def test_train_rm_ensemble_of_heads_shares_one_trunk(tracked_runs, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "heads"
    code = cli([
        "train-rm", "--model", str(tracked_runs["lm"]), "--data", str(tracked_runs["data"]),
        "--out", str(out), "--ensemble", "2", "--ensemble-kind", "heads", "--eval-split", "0.25",
        "--batch-size", "8", "--learning-rate", "3e-3", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    assert json.loads((out / "ensemble.json").read_text())["kind"] == "heads"
    a, b = (load_file(out / f"member-{i}" / "model.safetensors") for i in range(2))
    assert a.keys() == b.keys()
    heads = [k for k in a if k.startswith("score")]
    trunk = [k for k in a if not k.startswith("score")]
    assert heads and trunk
    assert all(torch.equal(a[k], b[k]) for k in trunk)  # one trunk, trained once
    assert not all(torch.equal(a[k], b[k]) for k in heads)  # M heads


def test_score_combines_the_members_by_the_objective(ensemble, tracked_runs, tmp_path):
    out = tmp_path / "scored.jsonl"
    code = cli([
        "score", "--model", str(ensemble), "--data", str(tracked_runs["data"]), "--out", str(out),
        "--ensemble-objective", "worst",
    ])  # fmt: skip
    assert code == 0
    rows = _rows(out)
    prompts = [r["prompt"] for r in rows for _ in r["responses"]]
    texts = [x["text"] for r in rows for x in r["responses"]]
    members = RewardEnsemble.from_pretrained(ensemble).score_members(prompts, texts)
    got = torch.tensor([x["score"] for r in rows for x in r["responses"]])
    assert torch.allclose(got, members.min(0).values, atol=1e-5)


def test_ppo_on_an_ensemble_logs_every_member_and_their_spread(ensemble, tracked_runs, tmp_path):
    out = tmp_path / "run"
    code = cli([
        "ppo", "--policy", str(tracked_runs["lm"]), "--reward-model", str(ensemble),
        "--ensemble-objective", "worst", "--prompts", str(tracked_runs["prompts"]),
        "--out", str(out), "--total-episodes", "32", "--batch-size", "16",
        "--response-length", "8", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    rows = [r for r in _rows(out / "metrics.jsonl") if "objective/scores" in r]
    assert len(rows) == 2
    for r in rows:
        members = [r[f"reward/member_{i}"] for i in range(3)]
        assert r["reward/ensemble_std"] > 0
        # the batch mean of the worst member is at most the worst member's batch mean
        assert r["objective/scores"] <= min(members) + 1e-5
    config = json.loads((out / "config.json").read_text())
    assert config["ensemble_objective"] == "worst"


def test_best_of_n_with_an_ensemble_keeps_the_objectives_best(ensemble, tracked_runs, tmp_path):
    out = tmp_path / "best.jsonl"
    code = cli([
        "best-of-n", "--policy", str(tracked_runs["lm"]), "--reward-model", str(ensemble),
        "--ensemble-objective", "uwo", "--prompts", str(tracked_runs["prompts"]),
        "--out", str(out), "-n", "4", "--max-new-tokens", "8",
    ])  # fmt: skip
    assert code == 0
    rows = _rows(out)
    assert len(rows) == 4
    uwo = RewardEnsemble.from_pretrained(ensemble, "uwo")
    for r in rows:
        assert len(r["scores"]) == 4 and r["score"] == max(r["scores"])
        assert r["index"] == r["scores"].index(r["score"])
        again = uwo.score([r["prompt"]], [r["response"]]).item()
        assert again == pytest.approx(r["score"], abs=1e-5)
