"""Two processes on this CPU (gloo), started the way users start them: ``torchrun --standalone
--nproc_per_node 2 -m rlhfkit ...`` and ``accelerate launch --multi_gpu --num_processes 2 ...``.

- train-rm: ``--batch-size`` is global, each process takes half of every batch and the loss is a
  mean over equal shares, so 1 and 2 processes give the same held-out accuracy and the same
  weights up to float summation order.
- ppo: prompts sharded, metrics reduced across processes, files written once, and it learns.
- a checkpoint made with 2 processes refuses to resume with 1, saying so.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfkit.tiny import build_tiny_causal_lm

pytestmark = pytest.mark.multiprocess

BIN = Path(sys.executable).parent
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "and", "it", "was", "very", "good", "bad"]
TOPICS = ["apples", "rivers", "clouds", "trains", "music", "stars", "cars", "books"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RLHFKIT_FAULTS": ""}


def torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "rlhfkit", *args]


def accelerate_launch(*args: str) -> list[str]:
    return [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "rlhfkit", *args]  # fmt: skip


def single(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlhfkit", *args]


def run(cmd: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout)
    return proc


def metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tell_me_about_lm):
    root = tmp_path_factory.mktemp("mp")
    # Rankings whose truth is known: each "good" is worth +1, each "bad" -1.
    rng = random.Random(0)
    lines = []
    for i in range(72):
        texts = []
        for j in range(3):
            words = [rng.choice(WORDS[:11]) for _ in range(5)] + ["good"] * j + ["bad"] * (2 - j)
            rng.shuffle(words)
            texts.append(" ".join(words))
        lines.append(json.dumps({
            "prompt": f"tell me about {TOPICS[i % len(TOPICS)]}",
            "responses": [{"id": str(j), "text": t} for j, t in enumerate(texts)],
            "ranking": ["2", "1", "0"],
        }))  # fmt: skip
    data = root / "rankings.jsonl"
    data.write_text("\n".join(lines) + "\n")
    lm = build_tiny_causal_lm(
        root / "rm_lm", [*WORDS, *TOPICS, "tell", "me", "about"], n_layer=1, n_embd=16
    )
    # the policy: the shared tiny GPT-2 pretrained to answer "tell me about X :" (tests/conftest.py)
    policy = {"path": tell_me_about_lm["policy"], **tell_me_about_lm}
    return {"root": root, "data": str(data), "rm_lm": str(lm), "policy": policy}


def rm_args(a, out: Path, *extra: str) -> list[str]:
    return ["train-rm", "--model", a["rm_lm"], "--data", a["data"], "--out", str(out),
            "--eval-split", "0.25", "--batch-size", "8", "--learning-rate", "3e-3", "--seed", "2",
            "--logging-steps", "1", "--save-every", "3", "--no-progress", *extra]  # fmt: skip


def test_train_rm_one_and_two_processes_agree(assets):
    from safetensors.torch import load_file

    root = assets["root"]
    one, two = root / "rm1", root / "rm2"
    # prompt sharing runs on one process only: off here too, so both sides do the same computation
    p1 = run(single(*rm_args(assets, one, "--no-share-prompt")))
    p2 = run(torchrun(*rm_args(assets, two)))
    assert p1.returncode == 0, p1.stderr[-3000:]
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "on 2 process(es)" in p2.stderr and "on 1 process(es)" in p1.stderr
    assert len(p2.stdout.strip().splitlines()) == 1  # the summary is printed by rank 0 only

    e1, e2 = (json.loads((d / "eval.json").read_text()) for d in (one, two))
    assert e1["accuracy"] == e2["accuracy"] and e1["n_pairs"] == e2["n_pairs"]
    assert e1["accuracy"] > 0.75  # it learned the known preference
    assert e1["loss"] == pytest.approx(e2["loss"], abs=1e-4)
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys()
    # Only the order of float sums differs. Adam turns that into at most about one step (lr) on a
    # few coordinates whose gradient is ~0 (m/√v ≈ ±1 whatever the noise); the rest agree closely.
    diffs = torch.cat([(w1[k] - w2[k]).abs().flatten() for k in w1])
    assert float(diffs.max()) < 3e-3, float(diffs.max())
    assert float(diffs.mean()) < 2e-5, float(diffs.mean())
    assert float((diffs > 1e-4).float().mean()) < 0.01
    m1, m2 = metrics(one), metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2]  # logged once, not per process
    for r1, r2 in zip(m1, m2, strict=True):
        assert r1["rm/loss"] == pytest.approx(r2["rm/loss"], abs=1e-4)
        assert r1["rm/pairs"] == r2["rm/pairs"]

    # The 2-process checkpoint refuses a 1-process resume, naming the difference.
    shutil.rmtree(two / "checkpoints" / "step-3", ignore_errors=True)  # keep the newest only
    refused = run(single(*rm_args(assets, two, "--resume")))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "processes: checkpoint 2, now 1" in refused.stderr


def test_ppo_two_processes_shard_gather_and_learn(assets):
    p = assets["policy"]
    out = assets["root"] / "ppo2"
    args = ["ppo", "--policy", p["path"], "--prompts", p["prompts"], "--reward-fn", p["reward"],
            "--out", str(out), "--total-episodes", "256", "--batch-size", "32",
            "--num-mini-batches", "2", "--response-length", "10", "--learning-rate", "3e-3",
            "--temperature", "1.0", "--save-every", "4", "--sample-every", "2", "--num-samples",
            "3", "--no-progress"]  # fmt: skip
    proc = run(accelerate_launch(*args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("policy saved") == 1  # the summary comes from rank 0 only
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 9))  # one line per update, not per process
    assert [r["episode"] for r in rows] == [32 * i for i in range(1, 9)]
    first = sum(r["objective/scores"] for r in rows[:2]) / 2
    last = sum(r["objective/scores"] for r in rows[-2:]) / 2
    assert last > first + 0.5 and last > 2 * first, (first, last)
    # Metrics are means over both processes' 16 rollouts: multiples of 1/32 for a count reward.
    assert all(
        (r["objective/scores"] * 32) == pytest.approx(round(r["objective/scores"] * 32), abs=1e-4)
        for r in rows
    )
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * 3  # 4 samplings × 3 samples, written by rank 0 only
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-8"]
    state = json.loads((out / "checkpoints" / "step-8" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert (out / "policy" / "model.safetensors").is_file()

    refused = run(single(*args, "--resume"))
    assert refused.returncode == 2 and "processes: checkpoint 2, now 1" in refused.stderr


def test_ppo_two_processes_with_the_reward_models_frozen_trunk(assets, tmp_path):
    """The default critic with a reward model that reads the policy's tokens
    (frozen-reward-model+head): the value head on the RM's frozen trunk, whose hidden states are
    cached per rollout and passed through DDP's forward, and the head on the policy trunk train on
    2 processes."""
    from rlhfkit.models import RewardModel

    p = assets["policy"]
    RewardModel.from_pretrained(p["path"]).save_pretrained(tmp_path / "rm")
    out = tmp_path / "ppo"
    args = ["ppo", "--policy", p["path"], "--prompts", p["prompts"], "--reward-model",
            str(tmp_path / "rm"), "--out", str(out), "--total-episodes", "64", "--batch-size",
            "32", "--num-mini-batches", "2", "--response-length", "8", "--no-progress"]  # fmt: skip
    proc = run(accelerate_launch(*args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss/value"]) and r["val/explained_variance"] != 0 for r in rows)
    assert json.loads((out / "config.json").read_text())["critic_resolved"] == (
        "frozen-reward-model+head"
    )


def test_every_command_leaves_its_process_group(tmp_path, monkeypatch):
    """``rlhfkit.cli.main`` destroys the process group a command joined, whatever the command
    returns (a rank that exits with its gloo group alive can abort at shutdown)."""
    import torch.distributed as dist

    from rlhfkit import cli

    def joins_and_fails(argv):
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
        )
        raise cli.RlhfkitError("failed after joining")

    monkeypatch.setitem(cli.COMMANDS, "joins", ("_joins", ""))
    module = type(sys)("rlhfkit.cli._joins")
    module.main = joins_and_fails
    monkeypatch.setitem(sys.modules, "rlhfkit.cli._joins", module)
    assert cli.main(["joins"]) == 2
    assert not dist.is_initialized()
