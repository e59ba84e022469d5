"""Never lose work: real ``rlhfkit ppo`` / ``rlhfkit train-rm`` processes killed with SIGKILL at
several points, then resumed with ``--resume``, end bit-identical to the same run uninterrupted;
a kill during a checkpoint save leaves the previous checkpoint intact and loadable; injected NaNs
are skipped and counted, and a run that keeps producing them stops with its last good checkpoint.

The kills come from ``RLHFKIT_FAULTS`` (rlhfkit.runtime.faults): the process sends itself SIGKILL at an
exact point, so each test hits the window it names instead of racing a timer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlhfkit.runtime.checkpoint import list_checkpoints, load_checkpoint
from rlhfkit.tiny import build_tiny_causal_lm

pytestmark = pytest.mark.slow

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "good",
    "bad",
    "and",
    "it",
    "was",
    "very",
    "great",
    "awful",
    "tell",
    "me",
    "about",
]
TOPICS = ["apples", "rivers", "clouds", "trains", "music", "stars"]


def weights_hash(path: Path) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (independent of file metadata)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def run(
    args: list[str], faults: str | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("RLHFKIT_FAULTS", None)
    if faults:
        env["RLHFKIT_FAULTS"] = faults
    cmd = [sys.executable, "-m", "rlhfkit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def run_all(jobs: list[tuple[list[str], str | None]]) -> list[subprocess.CompletedProcess]:
    """Run independent commands two at a time (one thread each: the machine has 2 cores)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda j: run(*j), jobs))


def metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def same_training_metrics(a: list[dict], b: list[dict]) -> bool:
    """Equal apart from wall-clock fields."""

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in rows]

    return strip(a) == strip(b)


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tell_me_about_task):
    root = tmp_path_factory.mktemp("kill")
    lm = build_tiny_causal_lm(root / "lm", WORDS + TOPICS + [":"], n_layer=1, n_embd=16)
    other = build_tiny_causal_lm(
        root / "other", WORDS + TOPICS + [":"], n_layer=1, n_embd=16, seed=1
    )
    prompts, reward = tell_me_about_task(root, TOPICS)
    rng = random.Random(0)
    lines = []
    for i in range(40):
        texts = [" ".join(rng.choice(WORDS) for _ in range(5)) + " great" * j for j in range(3)]
        lines.append(
            json.dumps(
                {
                    "prompt": f"tell me about {TOPICS[i % len(TOPICS)]} {i}",
                    "responses": [{"id": str(j), "text": t} for j, t in enumerate(texts)],
                    "ranking": ["2", "1", "0"],
                }
            )
        )
    data = root / "rankings.jsonl"
    data.write_text("\n".join(lines) + "\n")
    return {"root": root, "lm": str(lm), "other": str(other), "prompts": prompts,
            "reward": reward, "data": str(data)}  # fmt: skip


def ppo_args(a, out: Path, *extra: str) -> list[str]:
    return ["ppo", "--policy", a["lm"], "--prompts", a["prompts"], "--reward-fn", a["reward"],
            "--out", str(out), "--total-episodes", "40", "--batch-size", "8",
            "--num-mini-batches", "2", "--num-ppo-epochs", "2", "--response-length", "6",
            "--learning-rate", "3e-3", "--seed", "5", "--save-every", "1", "--save-total-limit",
            "2", "--sample-every", "1", "--no-progress", *extra]  # fmt: skip


def rm_args(a, out: Path, *extra: str) -> list[str]:
    # 32 training prompts / batch 8 = 4 steps per epoch, 2 epochs; checkpoints at 2, 4 and 6.
    return ["train-rm", "--model", a["lm"], "--data", a["data"], "--out", str(out),
            "--eval-split", "0.2", "--batch-size", "8", "--epochs", "2", "--learning-rate", "3e-3",
            "--seed", "5", "--save-every", "2", "--save-total-limit", "2", "--logging-steps", "1",
            "--no-progress", *extra]  # fmt: skip


# Kill points and the checkpoint a resume must start from.
PPO_KILLS = {
    "kill@update:3": 2,  # mid-update 3: weights changed in memory, unsaved
    "kill@after-checkpoint:2": 2,  # right after step-2 was renamed into place
    "kill@checkpoint-save:4": 3,  # while step-4 was being written: step-3 must be intact
}
RM_KILLS = {
    "kill@update:5": 4,
    "kill@after-checkpoint:2": 2,
    "kill@checkpoint-save:4": 2,
}


def _check_killed_then_resume(a, kills, make_args, final_file, name):
    root = a["root"] / name
    ref = root / "ref"
    outs = {spec: root / spec.replace("@", "_").replace(":", "_") for spec in kills}
    results = run_all([(make_args(a, ref), None)] + [(make_args(a, o), s) for s, o in outs.items()])
    assert results[0].returncode == 0, results[0].stderr
    for (spec, out), proc in zip(outs.items(), results[1:], strict=True):
        assert proc.returncode == -9, (spec, proc.returncode, proc.stderr[-2000:])
        assert not (out / final_file).exists()  # killed before the final save
        found = [s for s, _ in list_checkpoints(out)] if name == "ppo" else _rm_steps(out)
        assert found and found[-1] == kills[spec], (spec, found)
        if spec.startswith("kill@checkpoint-save"):
            step = int(spec.rsplit(":", 1)[1])
            ckpts = out / "checkpoints"
            assert not (ckpts / f"step-{step}").exists()
            assert any(p.name.startswith(f".step-{step}") for p in ckpts.iterdir())  # the torn save
    # Resume every killed run (two at a time) and compare with the uninterrupted one.
    resumed = run_all([(make_args(a, o, "--resume"), None) for o in outs.values()])
    want = weights_hash(ref / final_file)
    for (spec, out), proc in zip(outs.items(), resumed, strict=True):
        assert proc.returncode == 0, (spec, proc.stderr[-3000:])
        assert weights_hash(out / final_file) == want, spec
        assert same_training_metrics(metrics(out), metrics(ref)), spec
        assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    return ref, outs


def _rm_steps(out: Path) -> list[int]:
    root = out / "checkpoints"
    return sorted(
        int(p.name[5:])
        for p in root.iterdir()
        if p.name.startswith("step-") and (p / "trainer_state.json").is_file()
    )


def test_ppo_killed_at_three_points_resumes_bit_identical(assets):
    ref, outs = _check_killed_then_resume(
        assets, PPO_KILLS, ppo_args, Path("policy/model.safetensors"), "ppo"
    )
    # --save-total-limit 2 with a checkpoint every update: only the two newest are left.
    assert [s for s, _ in list_checkpoints(ref)] == [4, 5]
    ref_samples = (ref / "samples.jsonl").read_text()
    for out in outs.values():
        assert (out / "samples.jsonl").read_text() == ref_samples  # no duplicated or lost lines


def test_ppo_checkpoint_left_by_a_torn_save_is_loadable(assets):
    out = assets["root"] / "ppo_torn"
    proc = run(ppo_args(assets, out), "kill@checkpoint-save:3")
    assert proc.returncode == -9
    ckpt = load_checkpoint(out / "checkpoints" / "step-2")
    # 2 updates × 8 prompts from a file of 6: the third pass, 4 prompts in.
    assert ckpt.state["step"] == 2 and ckpt.state["data"] == {"epoch": 2, "cursor": 4, "n": 6}
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt.model_dir("policy"))
    for name in ("optimizer", "scheduler", "rng"):
        assert ckpt.object(name)
    # A resume with another model, batch size or world size is refused, naming what differs.
    other = run(ppo_args(assets, out, "--resume", "--policy", assets["other"], "--batch-size", "4"))
    assert other.returncode == 2
    assert (
        "policy: checkpoint" in other.stderr and "batch_size: checkpoint 8, now 4" in other.stderr
    )
    assert "Traceback" not in other.stderr


def test_train_rm_killed_at_three_points_resumes_bit_identical(assets):
    ref, outs = _check_killed_then_resume(
        assets, RM_KILLS, rm_args, Path("model.safetensors"), "rm"
    )
    assert _rm_steps(ref) == [4, 6]  # --save-total-limit 2
    want = json.loads((ref / "eval.json").read_text())
    for out in outs.values():
        got = json.loads((out / "eval.json").read_text())
        assert got["accuracy"] == want["accuracy"] and got["loss"] == want["loss"]
    refused = run(rm_args(assets, next(iter(outs.values())), "--resume", "--batch-size", "4"))
    assert refused.returncode == 2 and "batch_size: checkpoint 8, now 4" in refused.stderr


def test_nonfinite_values_are_skipped_counted_and_stop_a_run_cleanly(assets):
    root = assets["root"] / "nan"
    jobs = [
        (ppo_args(assets, root / "ppo_some"), "nan@reward:2,nan@loss:3"),
        (ppo_args(assets, root / "ppo_always", "--max-bad-updates", "2"), "nan@loss:3-99"),
        (rm_args(assets, root / "rm_some"), "nan@loss:3"),
        (rm_args(assets, root / "rm_always", "--max-bad-steps", "2"), "nan@loss:5-99"),
    ]
    some, always, rm_some, rm_always = run_all(jobs)

    # PPO: NaN reward in update 2 and NaN loss in update 3 are skipped and counted; no checkpoint
    # is written after a bad update; the run finishes with finite weights.
    assert some.returncode == 0, some.stderr[-2000:]
    rows = metrics(root / "ppo_some")
    assert [r["update/skipped"] for r in rows] == [0, 1, 0, 0, 0]
    assert rows[2]["update/skipped_steps"] == 2 * 2  # every optimizer step of update 3
    assert rows[-1]["update/nonfinite_total"] == 2
    assert "nan" not in (root / "ppo_some" / "samples.jsonl").read_text().lower()
    _assert_finite(root / "ppo_some" / "policy" / "model.safetensors")

    # PPO that keeps producing NaN: exit 2, a message naming the last good checkpoint, which is
    # kept and holds finite weights; no final policy.
    assert always.returncode == 2 and "Traceback" not in always.stderr
    assert "2 updates in a row" in always.stderr and "step-2" in always.stderr
    assert [s for s, _ in list_checkpoints(root / "ppo_always")] == [1, 2]
    _assert_finite(root / "ppo_always" / "checkpoints" / "step-2" / "policy" / "model.safetensors")
    assert not (root / "ppo_always" / "policy").exists()

    # train-rm: one skipped step, counted in the metrics; weights finite.
    assert rm_some.returncode == 0, rm_some.stderr[-2000:]
    rows = metrics(root / "rm_some")
    assert [r["rm/skipped_steps"] for r in rows][:4] == [0, 0, 1, 0]
    assert rows[-1]["rm/nonfinite_total"] == 1
    _assert_finite(root / "rm_some" / "model.safetensors")

    assert rm_always.returncode == 2 and "Traceback" not in rm_always.stderr
    assert "2 optimizer steps in a row" in rm_always.stderr and "step-4" in rm_always.stderr
    assert _rm_steps(root / "rm_always") == [2, 4]
    assert not (root / "rm_always" / "model.safetensors").exists()


def _assert_finite(path: Path) -> None:
    from safetensors.torch import load_file

    for name, t in load_file(str(path)).items():
        assert t.isfinite().all(), name
