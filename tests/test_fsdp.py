"""``--fsdp`` on two CPU processes (gloo, ``torchrun``), the code path a GPU run takes with NCCL:

- each process really holds half of every sharded parameter (local shard shapes);
- 2 FSDP processes and 1 plain process on the same global batch give the same losses and final
  weights within 1e-4, for ``train-rm`` and for 4 PPO updates (``--sample-chunk`` makes the samples
  independent of the number of processes);
- SIGKILL in the middle of a step or update, then ``--resume`` from the sharded checkpoint, ends
  bit-identical to the uninterrupted run (``train-rm`` and ``ppo``);
- LoRA trains under FSDP; the final directories load with ``from_pretrained``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from test_multiprocess import assets, env, metrics, rm_args, run, single, torchrun  # noqa: F401

pytestmark = pytest.mark.multiprocess


def run_pair(a: list[str], b: list[str]) -> tuple[subprocess.CompletedProcess, ...]:
    """Two independent commands at once (the machine has 2 cores; each waits on the other's I/O)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return tuple(pool.map(run, [a, b]))


def weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def largest_difference(w1: dict[str, torch.Tensor], w2: dict[str, torch.Tensor]) -> float:
    assert w1.keys() == w2.keys()
    return max(float((w1[k] - w2[k]).abs().max()) for k in w1)


SHARD_CHECK = """
import json, sys, torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM
from rlhfkit.runtime.fsdp import device_mesh, full_copy, gathered, shard, FsdpSettings

dist.init_process_group("gloo")
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
full = {n: tuple(p.shape) for n, p in model.named_parameters()}
shard(model, device_mesh(torch.device("cpu")), FsdpSettings())
local = {n: tuple(p.to_local().shape) for n, p in model.named_parameters()}
def whole():  # the parameters the modules hold now, that are whole plain tensors
    return {n: tuple(p.shape) for n, p in model.named_parameters() if not hasattr(p, "to_local")}

with gathered(model):
    before = whole()
    ids = torch.tensor([[1, 2, 3]])
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    after = whole()  # 4 forwards later: still gathered, so nothing was gathered again per token
resharded = whole()
plain = full_copy(model)
result = {"rank": dist.get_rank(), "full": full, "local": local, "generated": out.tolist(),
          "before": before, "after": after, "resharded": resharded,
          "copy": None if plain is None else {n: tuple(p.shape) for n, p in plain.named_parameters()}}
print("RESULT " + json.dumps(result))
dist.destroy_process_group()
"""


def test_fsdp_really_shards_each_parameter(assets, tmp_path):  # noqa: F811 (the fixture imported above)
    script = tmp_path / "shards.py"
    script.write_text(SHARD_CHECK)
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
           str(script), assets["policy"]["path"]]  # fmt: skip
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(
        (json.loads(x[7:]) for x in proc.stdout.splitlines() if x.startswith("RESULT ")),
        key=lambda r: r["rank"],
    )
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert r["full"].keys() == r["local"].keys()
        for name, shape in r["full"].items():
            # dim 0 split in two (FSDP2's Shard(0)); rank 1 takes the smaller half of an odd size
            half = (shape[0] + 1) // 2 if r["rank"] == 0 else shape[0] // 2
            assert tuple(r["local"][name]) == (half, *shape[1:]), name
    # gathered() makes every parameter whole for a whole generation (not per token), then
    # shards them again
    for r in results:
        assert r["before"] == r["after"] == r["full"] and r["resharded"] == {}
    # the tokens generated with the gathered model are the same on both processes
    assert results[0]["generated"] == results[1]["generated"]
    assert len(results[0]["generated"][0]) == 3 + 4
    # full_copy: a whole model on the main process only
    assert results[0]["copy"] == results[0]["full"] and results[1]["copy"] is None


def test_train_rm_fsdp_on_two_processes_matches_one_process(assets):  # noqa: F811 (the fixture imported above)
    from transformers import AutoModelForSequenceClassification

    root = assets["root"]
    one, two = root / "rm-plain", root / "rm-fsdp"
    # The ranking loss does not change when every reward shifts by the same amount, so the final
    # norm's bias has a gradient of exactly 0 up to float noise, which differs with the order of
    # the sums. Adam's default epsilon (1e-8) divides that noise by its own size and moves the bias
    # by ±lr per step (2.5e-4 after this run); epsilon 1e-6 leaves the noise as noise.
    lr = ["--learning-rate", "1e-3", "--adam-epsilon", "1e-6"]
    p1, p2 = run_pair(
        single(*rm_args(assets, one, "--no-share-prompt", *lr)),
        torchrun(*rm_args(assets, two, "--fsdp", *lr)),
    )
    assert p1.returncode == 0, p1.stderr[-3000:]
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "on 2 process(es)" in p2.stderr
    e1, e2 = (json.loads((d / "eval.json").read_text()) for d in (one, two))
    assert e1["n_pairs"] == e2["n_pairs"] and e1["accuracy"] == e2["accuracy"]
    assert e1["loss"] == pytest.approx(e2["loss"], abs=1e-4)
    for r1, r2 in zip(metrics(one), metrics(two), strict=True):
        assert r1["step"] == r2["step"]
        assert r1["rm/loss"] == pytest.approx(r2["rm/loss"], abs=1e-4)
    assert largest_difference(weights(one), weights(two)) < 1e-4
    # the sharded checkpoint: one file per process (torch.distributed.checkpoint)
    sharded = sorted(p.name for p in (two / "checkpoints").glob("step-*/sharded/*.distcp"))
    assert len(sharded) >= 2 and {"__0_0.distcp", "__1_0.distcp"} <= set(sharded)
    # the final directory is an ordinary Hugging Face model
    model = AutoModelForSequenceClassification.from_pretrained(two)
    assert model.config.num_labels == 1

    # SIGKILL in the middle of step 5, then --resume from the sharded step-3 checkpoint
    killed = root / "rm-fsdp-killed"
    args = torchrun(*rm_args(assets, killed, "--fsdp", *lr))
    crash = subprocess.run(args, capture_output=True, text=True, timeout=400,
                           env={**env(), "RLHFKIT_FAULTS": "kill@update:5"})  # fmt: skip
    assert crash.returncode != 0 and not (killed / "model.safetensors").exists()
    resumed = run(torchrun(*rm_args(assets, killed, "--fsdp", "--resume", *lr)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert largest_difference(weights(killed), weights(two)) == 0.0
    assert [r["rm/loss"] for r in metrics(killed)] == [r["rm/loss"] for r in metrics(two)]


def ppo_args(a: dict, out: Path, *extra: str) -> list[str]:
    p = a["policy"]
    return ["ppo", "--policy", p["path"], "--prompts", p["prompts"], "--reward-fn", p["reward"],
            "--out", str(out), "--total-episodes", "64", "--batch-size", "16",
            "--num-mini-batches", "1", "--response-length", "8", "--learning-rate", "1e-3",
            "--temperature", "1.0", "--sample-chunk", "4", "--save-every", "2", "--no-progress",
            "--critic", "head", *extra]  # fmt: skip


def test_ppo_fsdp_matches_one_process_and_resumes_bit_identical(assets):  # noqa: F811 (the fixture imported above)
    from transformers import AutoModelForCausalLM

    root = assets["root"]
    one, two, killed = root / "ppo-plain", root / "ppo-fsdp", root / "ppo-fsdp-killed"
    p1, p2 = run_pair(single(*ppo_args(assets, one)), torchrun(*ppo_args(assets, two, "--fsdp")))
    assert p1.returncode == 0, p1.stderr[-3000:]
    assert p2.returncode == 0, p2.stderr[-3000:]
    m1, m2 = metrics(one), metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [1, 2, 3, 4]
    for r1, r2 in zip(m1, m2, strict=True):
        assert r1["objective/scores"] == pytest.approx(r2["objective/scores"], abs=1e-4)
        for key in ("loss/policy", "loss/value", "objective/kl"):
            assert r1[key] == pytest.approx(r2[key], abs=1e-4), (r1["step"], key)
    assert largest_difference(weights(one / "policy"), weights(two / "policy")) < 1e-4
    AutoModelForCausalLM.from_pretrained(two / "policy")  # an ordinary model directory

    # SIGKILL in the middle of update 3 (after the checkpoint of update 2), then --resume
    cmd = torchrun(*ppo_args(assets, killed, "--fsdp"))
    crash = subprocess.run(cmd, capture_output=True, text=True, timeout=400,
                           env={**env(), "RLHFKIT_FAULTS": "kill@update:3"})  # fmt: skip
    assert crash.returncode != 0 and not (killed / "policy").exists()
    assert (killed / "checkpoints" / "step-2" / "sharded").is_dir()
    resumed = run(torchrun(*ppo_args(assets, killed, "--fsdp", "--resume")))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert weights(killed / "policy").keys() == weights(two / "policy").keys()
    assert largest_difference(weights(killed / "policy"), weights(two / "policy")) == 0.0
    untimed = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert untimed(metrics(killed)) == untimed(metrics(two))


def test_ppo_fsdp_with_lora_trains_adapters_and_saves_a_merged_model(assets):  # noqa: F811 (the fixture imported above)
    from transformers import AutoModelForCausalLM

    root = assets["root"]
    out = root / "ppo-fsdp-lora"
    proc = run(
        torchrun(*ppo_args(assets, out, "--fsdp", "--lora-r", "4", "--total-episodes", "32"))
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in metrics(out)] == [1, 2]
    tuned = weights(out / "policy")
    assert not any("lora" in k for k in tuned)  # adapters merged into the weights
    base = weights(Path(assets["policy"]["path"]))
    changed = [k for k in base if k in tuned and not torch.equal(base[k], tuned[k])]
    # LoRA's default targets for GPT-2 (c_attn) changed; the embeddings did not
    assert changed and all("attn" in k for k in changed), changed
    AutoModelForCausalLM.from_pretrained(out / "policy")
