"""The benchmark against TRL: its synthetic world, its FLOP count, and one tiny end-to-end run.

Not a timed test: the end-to-end run only checks that every measurement runs and that the ratios
come out finite and positive (speed on a shared CI machine proves nothing).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _world  # noqa: E402


def test_gold_quality_is_the_mean_word_value():
    assert _world.gold_quality(" good1 good2 bad0 word3") == pytest.approx(0.25)
    assert _world.gold_quality(" bad1 bad2") == -1.0
    assert _world.gold_quality("") == 0.0


def test_rankings_are_strict_and_best_first():
    rankings = _world.make_rankings(50, 4, seed=0)
    for r in rankings:
        text = {x["id"]: x["text"] for x in r["responses"]}
        q = [_world.gold_quality(text[i]) for i in r["ranking"]]
        assert q == sorted(q, reverse=True) and len(set(q)) == 4
    pairs = _world.to_pairs(rankings)
    assert len(pairs) == 6 * 50  # K(K-1)/2 pairs per ranking
    assert all(_world.gold_quality(p["chosen"]) > _world.gold_quality(p["rejected"]) for p in pairs)


def test_rankings_read_back_as_rlhfkit_rankings(tmp_path):
    from rlhfkit.data import read_preferences

    path = _world.write_jsonl(tmp_path / "r.jsonl", _world.make_rankings(5, 4, seed=1))
    read = list(read_preferences(path))
    assert len(read) == 5 and all(sorted(r.ranks()) == [1, 2, 3, 4] for r in read)


def test_flop_count_matches_torch_flop_counter(tmp_path):
    """The analytic count = torch's matmul count + the attention term (which the CPU SDPA kernel
    does not report) + the bias/layer-norm parameters counted as if they were matmul weights."""
    import _ppo
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    model_dir = _world.build_model(tmp_path / "m", n_layer=2, n_embd=64, n_head=2)
    p = _world.count_params(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    B, T, keep = 3, 20, 5
    with FlopCounterMode(display=False) as counter:
        model(input_ids=torch.randint(0, p["vocab"], (B, T)), logits_to_keep=keep)
    ours = B * _ppo.forward_flops(p, T, keep)
    attention = B * 4 * p["n_layer"] * T * T * p["n_embd"]
    small = B * 2 * T * (p["non_embedding"] - p["n_layer"] * 12 * p["n_embd"] ** 2)
    assert ours == counter.get_total_flops() + attention + small


def test_ppo_flops_of_a_value_head_or_a_frozen_critic():
    import _ppo

    p = {"non_embedding": 1000, "n_layer": 1, "n_embd": 4, "vocab": 10}
    s = {"batch_size": 2, "response_length": 3, "ppo_epochs": 4}
    head = _ppo.ppo_flops(p, None, p, s, prompt_len=5)
    separate = _ppo.ppo_flops(p, p, p, s, prompt_len=5)
    assert head["train"] == 4 * 2 * 3 * _ppo.forward_flops(p, 8, 4)
    assert separate["train"] - head["train"] == 4 * 2 * 3 * _ppo.forward_flops(p, 8, 0)
    assert head["generate"] == separate["generate"] and head["reward"] == separate["reward"]
    # A frozen critic trunk (the default with a reward model): one forward per rollout, no training.
    frozen = _ppo.ppo_flops(p, p, p, s, prompt_len=5, critic_trained=False)
    assert frozen["train"] == head["train"]
    assert frozen["rollout_forward"] == separate["rollout_forward"]
    assert frozen["rollout_forward"] - head["rollout_forward"] == 2 * _ppo.forward_flops(p, 8, 0)


def test_ppo_flops_training_is_three_forwards_per_epoch():
    import _ppo

    p = {"non_embedding": 1000, "n_layer": 1, "n_embd": 4, "vocab": 10}
    s = {"batch_size": 2, "response_length": 3, "ppo_epochs": 4}
    f = _ppo.ppo_flops(p, p, p, s, prompt_len=5)
    per_seq = _ppo.forward_flops(p, 8, 4) + _ppo.forward_flops(p, 8, 0)
    assert f["train"] == 4 * 2 * 3 * per_seq
    assert f["rollout_forward"] == 2 * (
        2 * _ppo.forward_flops(p, 8, 4) + _ppo.forward_flops(p, 8, 0)
    )


@pytest.mark.slow
def test_benchmark_runs_end_to_end_in_a_tiny_configuration(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "vs_trl.py"), "--preset", "tiny", "--json", str(out),
         "--markdown", str(md), "--work-dir", str(tmp_path / "work"), "--threads", "1"],
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ("rm_speedup", "ppo_speedup", "ppo_peak_rss_ratio", "ppo_speedup_same_critic",
                "ppo_peak_rss_ratio_same_critic", "mfu_train"):  # fmt: skip
        assert isinstance(res[key], float) and math.isfinite(res[key]) and res[key] > 0, key
    assert 0 <= res["rm_accuracy_ours"] <= 1 and 0 <= res["rm_accuracy_trl"] <= 1
    assert res["matmul_peak_gflops"] > 0
    # Three PPO sides: ours as users run it (the default critic: here heads on the RM's frozen
    # trunk and on the policy trunk),
    # ours with TRL's separate critic, TRL.
    runs = res["ppo"]["tiny"]["runs"]
    for side in ("ours-default", "ours", "trl"):
        assert len(runs[side]) == 1
    assert runs["ours-default"][0]["critic"] == "frozen-reward-model+head"
    assert runs["ours"][0]["critic"] == "reward-model"
    med = {side: runs[side][0]["episodes_per_s"] for side in runs}
    assert res["ppo_speedup"] == pytest.approx(med["ours-default"] / med["trl"])
    assert res["ppo_speedup_same_critic"] == pytest.approx(med["ours"] / med["trl"])
    assert res["ppo_final_reward_ours"] == runs["ours-default"][0]["final_reward"]
    assert res["ppo_final_reward_ours_same_critic"] == runs["ours"][0]["final_reward"]
    # Cost growth: the batch and the response length doubled in turn (once each here; the full
    # run doubles twice).
    grid = [(g["batch"], g["response_length"]) for g in res["growth"]]
    assert grid == [(8, 8), (16, 8), (8, 16)]
    assert all(g["episodes_per_s"] > 0 and g["peak_rss_mb"] > 0 for g in res["growth"])
    # The profile covers both trainers, with the phases each one spends time in.
    prof = res["profile"]["tiny"]
    assert prof["ours"]["phases"]["generation"] > 0 and prof["ours"]["phases"]["train backward"] > 0
    assert prof["ours"]["phases"]["reference forward"] > 0
    assert (
        prof["trl"]["phases"]["train backward"] > 0
        and prof["trl"]["phases"]["reference forward"] > 0
    )
    text = md.read_text()
    assert "## Reward model" in text and "rm_speedup" in text
    assert "`ppo_speedup_same_critic`" in text and "ours, default critic" in text
    assert "## How our cost grows" in text and "| ours s | ours share | trl s | trl share |" in text


def test_peak_rss_of_a_worker_is_its_own_not_its_parents():
    """Linux carries ``ru_maxrss`` across exec: a worker started by a large parent would report
    the parent's peak. ``peak_rss_mb`` must report the worker's own (a bare Python: well under
    100 MiB) while its parent holds 300 MiB."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    held = bytearray(300 * 2**20)
    held[::4096] = b"\x01" * len(held[::4096])  # touch every page: resident
    code = "import _machine; print(_machine.peak_rss_mb())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(BENCH), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert len(held) == 300 * 2**20
    assert 1 < float(out.stdout) < 100


def test_generation_benchmark_samples_the_batch_it_is_given(tmp_path):
    """``benchmarks/generation.py --batch N``: N rows sampled at once by every side (rlhfkit's loop
    with packed weights forced on and off and GPT-2's lean step too), the training step on N / 2;
    every ratio finite; a batch
    too small to halve is refused with a message."""
    script = BENCH / "generation.py"
    out = tmp_path / "gen.json"
    cmd = [sys.executable, str(script), "--sizes", "demo", "--runs", "1", "--json", str(out)]
    proc = subprocess.run([*cmd, "--batch", "6"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (size,) = json.loads(out.read_text())["sizes"]
    assert size["model"] == "demo" and size["batch"] == 6
    sides = (
        "transformers",
        "rlhfkit",
        "rlhfkit_packed",
        "rlhfkit_unpacked",
        "rlhfkit_model_forward",
    )
    for side in sides:
        assert size[side]["new_tokens"] == size["response"]
        ratio = size[side]["gen_over_train"]
        assert math.isfinite(ratio) and ratio > 0
    # the demo-sized policy (96 wide) has no layer large enough to pack
    assert size["packed_layers"] == 0 and math.isfinite(size["packing_speedup"])
    assert "batch 6," in proc.stdout and "oneDNN-packed weights (0 layers)" in proc.stdout
    assert size["packed_by_default"] == 0 and "packs 0 of them by default" in proc.stdout
    assert math.isfinite(size["gpt2_step_speedup"]) and "GPT-2's lean step" in proc.stdout
    bad = subprocess.run([*cmd, "--batch", "1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--batch must be at least 2" in bad.stderr


TRL_LIKE_OUTPUT = (
    "{'objective/kl': '0.1418', 'lr': '0.00014', 'episode': 288, 'epoch': '4.5'}\n"
    "{'objective/kl': '-0.02529', 'policy/approxkl_avg': 'nan', 'episode': 320, 'epoch': '5'}\n"
)


def test_a_training_run_that_fails_is_recorded_when_failure_is_a_result(tmp_path):
    import vs_trl

    spec = {"threads": 1}
    with pytest.raises(SystemExit, match="measurement failed"):
        vs_trl.run_job("no-such-job", "trl", spec, tmp_path, "strict")
    r = vs_trl.run_job("no-such-job", "trl", spec, tmp_path, "lenient", failure_is_a_result=True)
    assert r["failed"] and r["exit_code"] != 0 and r["process_seconds"] > 0
    assert r["error"] == "unknown job 'no-such-job'" and r["last_logged_episode"] is None
    assert "unknown job" in Path(r["log"]).read_text(encoding="utf-8")
    # what TRL prints before its sampler meets NaN probabilities
    err = "Traceback ...\nRuntimeError: probability tensor contains either `inf`, `nan` or element < 0\n"
    r = vs_trl.failed_run(1, TRL_LIKE_OUTPUT, err, tmp_path / "x.log", 12.0)
    assert r["last_logged_episode"] == 320 and r["error"].startswith("RuntimeError: probability")
    assert vs_trl.describe_failure(r).startswith("failed after episode 320: RuntimeError")


def test_the_summary_of_the_longer_run_says_which_side_failed():
    import _report
    import vs_trl

    failed = vs_trl.failed_run(1, TRL_LIKE_OUTPUT, "RuntimeError: nan\n", Path("x.log"), 9.0)
    res = {
        "ppo_learn": {"settings": {"total_episodes": 480},
                      "runs": {"ours-default": [{"final_reward": 24.2}], "trl": [failed]}},
        "ppo_learn_final_reward_ours": 24.23, "ppo_learn_final_gold_ours": 0.49,
        "ppo_learn_final_reward_trl": None, "ppo_learn_final_gold_trl": None,
    }  # fmt: skip
    row = _report._learning_summary_row(res)
    assert "24.230 (gold 0.490) / failed" in row
    assert "ours ≥ TRL: met (TRL failed after episode 320: RuntimeError: nan)" in row
    res["ppo_learn_final_reward_trl"], res["ppo_learn_final_gold_trl"] = 24.5, 0.5
    res["ppo_learn"]["runs"]["trl"] = [{"final_reward": 24.5}]
    row = _report._learning_summary_row(res)
    assert (
        "24.230 / 24.500; gold 0.490 / 0.500" in row and "NOT met (reward), NOT met (gold)" in row
    )
