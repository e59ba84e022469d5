"""PPO integration tests on a tiny pretrained GPT-2 (word-level, pad != eos).

The policy (``tell_me_about_lm`` in tests/conftest.py) is pretrained for a few steps on "tell me
about X : <3-7 random words> <eos>" so that it emits words and EOS like a real base model; the
reward pays for the word "good".
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from rlhfkit.errors import ConfigError
from rlhfkit.ppo import PPOConfig, PPOTrainer, TrainingStopped, load_reward_fn

REQUIRED = (
    "objective/kl", "objective/kl_coef", "objective/entropy", "objective/scores",
    "objective/non_score_reward", "objective/rlhf_reward", "policy/approxkl", "policy/clipfrac",
    "loss/policy", "loss/value", "val/ratio", "val/ratio_var", "val/explained_variance",
    "val/num_eos_tokens", "response/length_mean", "time/generate", "time/score", "time/forward",
    "time/update", "time/total", "step", "episode",
)  # fmt: skip


def good_count(prompts, responses):
    return [float(r.split().count("good")) for r in responses]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tell_me_about_lm, tmp_path_factory):
    """The shared pretrained tiny policy (tests/conftest.py), and a directory for this module's
    runs."""
    return {**tell_me_about_lm, "root": tmp_path_factory.mktemp("ppo")}


def _config(world, out, **kw) -> PPOConfig:
    base = dict(
        policy=world["policy"], prompts=world["prompts"], out=str(out), reward_fn=world["reward"],
        total_episodes=64, batch_size=32, num_mini_batches=2, response_length=10,
        learning_rate=3e-3, temperature=1.0, kl_coef=0.05, progress=False, sample_every=4,
    )  # fmt: skip
    base.update(kw)
    return PPOConfig(**base)


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def learning_run(world):
    out = world["root"] / "learn"
    cfg = _config(world, out, total_episodes=384, save_every=6, save_total_limit=1)
    result = PPOTrainer(cfg).train()
    return out, result


def test_reward_rises_several_fold_with_finite_kl(learning_run):
    out, _result = learning_run
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["episode"] == 384
    first = sum(r["objective/scores"] for r in rows[:2]) / 2
    last = sum(r["objective/scores"] for r in rows[-3:]) / 3
    assert last > 3 * max(first, 0.1), (first, last)
    assert all(math.isfinite(r["objective/kl"]) for r in rows)
    assert rows[-1]["objective/kl"] > 0.5  # the policy did move away from the reference
    for r in rows:
        assert set(REQUIRED) <= set(r), set(REQUIRED) - set(r)
        assert 0.8 < r["val/ratio"] < 1.25
        assert r["update/skipped"] == 0 and r["update/skipped_steps"] == 0


def test_rlhf_reward_identity_holds_in_logs(learning_run):
    out, _ = learning_run
    for r in _metrics(out):
        expected = r["objective/scores"] - r["objective/kl_coef"] * r["objective/kl"]
        assert r["objective/rlhf_reward"] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_outputs_written(learning_run, world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = learning_run
    model = AutoModelForCausalLM.from_pretrained(out / "policy")
    AutoTokenizer.from_pretrained(out / "policy")
    base = AutoModelForCausalLM.from_pretrained(world["policy"])
    changed = [
        n for (n, p), q in zip(model.named_parameters(), base.parameters(), strict=True)
        if not torch.equal(p, q)
    ]  # fmt: skip
    assert len(changed) == len(list(base.parameters()))  # every trained weight moved
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-12"]  # save_total_limit=1
    samples = [json.loads(s) for s in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {4, 8, 12}
    assert set(samples[0]) == {"step", "prompt", "response", "score", "kl"}
    assert json.loads((out / "config.json").read_text())["total_episodes"] == 384


def test_large_beta_keeps_kl_small(world, learning_run):
    out = world["root"] / "beta"
    PPOTrainer(_config(world, out, total_episodes=384, kl_coef=2.0)).train()
    strong, weak = _metrics(out), _metrics(learning_run[0])
    assert max(r["objective/kl"] for r in strong[-3:]) < 0.5
    assert strong[-1]["objective/kl"] < weak[-1]["objective/kl"] / 5


def test_a_used_directory_needs_resume_or_overwrite(world):
    """Two runs mixed in one --out would read as one, and --resume would continue from whichever
    checkpoint is newest: refused, before any model is loaded, unless --overwrite starts afresh."""
    out = world["root"] / "again"
    PPOTrainer(_config(world, out, total_episodes=96, save_every=1, save_total_limit=4)).train()
    assert (out / "checkpoints" / "step-3").is_dir()
    with pytest.raises(ConfigError, match=r"holds a previous run \(metrics.jsonl, checkpoints, "
                       r"policy\); pass --resume .* or --overwrite"):  # fmt: skip
        PPOTrainer(_config(world, out, total_episodes=64))
    assert (out / "checkpoints" / "step-3").is_dir()  # refused: nothing deleted
    PPOTrainer(_config(world, out, total_episodes=64, overwrite=True)).train()
    assert [r["step"] for r in _metrics(out)] == [1, 2]
    assert not (out / "checkpoints").exists()  # the first run's step-3 cannot be resumed from


def test_adaptive_kl_moves_beta_toward_target(world):
    out = world["root"] / "adaptive"
    PPOTrainer(_config(world, out, total_episodes=128, kl_target=0.01, kl_horizon=100)).train()
    rows = _metrics(out)
    assert rows[0]["objective/kl_coef"] == 0.05
    assert rows[-1]["objective/kl_coef"] > 0.05  # KL above target -> β grows


def test_nonfinite_reward_is_skipped_and_counted(world):
    calls = {"n": 0}

    def flaky(prompts, responses):
        calls["n"] += 1
        return (
            [float("nan")] * len(responses) if calls["n"] == 2 else good_count(prompts, responses)
        )

    out = world["root"] / "nan_reward"
    trainer = PPOTrainer(_config(world, out, total_episodes=96, reward_fn=None), reward_fn=flaky)
    with pytest.warns(UserWarning, match="update skipped"):
        trainer.train()
    rows = _metrics(out)
    assert [r["update/skipped"] for r in rows] == [0, 1, 0]
    assert rows[-1]["update/nonfinite_total"] == 1
    policy = trainer.accelerator.unwrap_model(trainer.model).policy
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_nonfinite_loss_never_reaches_weights_and_run_stops(world, monkeypatch):
    out = world["root"] / "nan_loss"
    from rlhfkit import losses

    real = losses.ppo_clip_objective
    monkeypatch.setattr(losses, "ppo_clip_objective", lambda *a, **k: real(*a, **k) * float("nan"))
    trainer = PPOTrainer(_config(world, out, total_episodes=160, max_bad_steps=2, save_every=1))
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = [p.detach().clone() for p in model.policy.parameters()]
    hidden = torch.randn(3, 5, model.value_head.linear.in_features)
    values_before = model.value_head(hidden).detach()
    with (
        pytest.warns(UserWarning, match="optimizer step skipped") as caught,
        pytest.raises(TrainingStopped, match="2 updates in a row"),
    ):
        trainer.train()
    # the schedule advances on skipped steps by design; torch's "scheduler before optimizer"
    # warning (every optimizer step of the first update was skipped) is not the user's concern
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    after = list(model.policy.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # The value head's weights are rescaled with the return statistics, its values are not.
    assert float(model.value_head.return_std) != 1.0
    torch.testing.assert_close(model.value_head(hidden).detach(), values_before, atol=1e-5, rtol=0)
    rows = _metrics(out)
    assert len(rows) == 2 and rows[-1]["update/skipped_steps"] == 2 * 4  # 2 minibatches × 4 epochs
    assert not (out / "checkpoints").exists()  # a bad state is never checkpointed
    assert not (out / "policy").exists()


def test_reward_function_loading(tmp_path):
    f = tmp_path / "r.py"
    f.write_text("def r(p, q):\n    return [1.0] * len(q)\n")
    assert load_reward_fn(f"{f}:r")(["a"], ["b"]) == [1.0]
    assert load_reward_fn("json:dumps") is json.dumps
    from rlhfkit.errors import ConfigError

    for bad in (f"{f}:missing", "nope.py:r", "no_colon", "not_a_module_xyz:f"):
        with pytest.raises(ConfigError):
            load_reward_fn(bad)


@dataclass
class FakeReport:
    metrics: dict
    flagged: list
    warning: str | None
    suspected: bool = False


@dataclass
class FakeMonitor:
    """Flags the word 'good' once it is 3× as frequent as in the base samples."""

    base_prompts: list
    base_texts: list
    base_has_eos: list | None = None
    reward_fn: object = None
    calls: list = field(default_factory=list)

    def check(self, tuned_texts, tuned_has_eos=None, step=None):
        def rate(ts):
            return sum(t.split().count("good") for t in ts) / max(
                1, sum(len(t.split()) for t in ts)
            )

        ratio = (rate(tuned_texts) + 1e-3) / (rate(self.base_texts) + 1e-3)
        self.calls.append((step, len(tuned_texts), ratio))
        flagged = ["good"] if ratio > 3 else []
        return FakeReport({"hacking/top_ratio": ratio, "hacking/flagged": float(bool(flagged))},
                          flagged, "'good' is 3× more frequent" if flagged else None)  # fmt: skip


def test_hacking_monitor_hook_stops_and_keeps_last_good_checkpoint(world):
    out = world["root"] / "hacking"
    monitors = []

    def factory(*args, **kwargs):
        monitors.append(FakeMonitor(*args, **kwargs))
        return monitors[-1]

    cfg = _config(world, out, total_episodes=640, hacking_check_every=2, hacking_num_prompts=5,
                  stop_on_hacking=True)  # fmt: skip
    with pytest.warns(UserWarning, match="hacking monitor"):
        result = PPOTrainer(cfg, hacking_monitor=factory).train()
    mon = monitors[0]
    assert len(mon.base_prompts) == len(mon.base_texts) == 5 and mon.reward_fn is not None
    assert result["stopped"] == "hacking"
    rows = _metrics(out)
    checked = [r for r in rows if "hacking/top_ratio" in r]
    assert [r["step"] for r in checked] == [s for s, _, _ in mon.calls]
    assert checked[-1]["hacking/flagged"] == 1.0 and rows[-1]["step"] < 20
    stopped = json.loads((out / "stopped.json").read_text())
    assert stopped["step"] == rows[-1]["step"]
    if len(checked) > 1:  # the last clean check left a checkpoint behind
        assert stopped["last_good_checkpoint"].endswith(f"step-{checked[-2]['step']}")
    assert not (out / "policy").exists()


def test_a_drift_signal_alone_stops_a_run_that_stops_on_hacking(world):
    """No token flagged, only a drift signal (the monitor's `suspected`): that is still a flag."""
    out = world["root"] / "drift-stop"

    class DriftMonitor(FakeMonitor):
        def check(self, tuned_texts, tuned_has_eos=None, step=None):
            self.calls.append((step, len(tuned_texts), 1.0))
            return FakeReport({"hacking/flagged": 0.0, "hacking/drift_flagged": 1.0}, [],
                              f"step {step}: possible reward hacking: length 9 → 0", True)  # fmt: skip

    cfg = _config(world, out, total_episodes=640, hacking_check_every=2, hacking_num_prompts=5,
                  stop_on_hacking=True)  # fmt: skip
    with (
        pytest.warns(UserWarning, match="length 9 → 0"),
        pytest.warns(UserWarning, match="stopped at update 2: the hacking monitor flagged"),
    ):
        result = PPOTrainer(cfg, hacking_monitor=DriftMonitor).train()
    assert result["stopped"] == "hacking"
    assert _metrics(out)[-1]["step"] == 2  # the first check stopped it
    assert "length 9 → 0" in json.loads((out / "stopped.json").read_text())["warning"]


def test_reward_model_path_end_to_end(world, tmp_path):
    """A RewardModel (built from a tiny backbone and saved — not trained by train-rm) scores the
    responses; the critic is warm-started from it."""
    from rlhfkit.models import RewardModel

    rm = RewardModel.from_pretrained(world["policy"])
    rm.save_pretrained(tmp_path / "rm")
    out = tmp_path / "run"
    cfg = _config(world, out, reward_fn=None, reward_model=str(tmp_path / "rm"),
                  critic="reward-model", total_episodes=64)  # fmt: skip
    PPOTrainer(cfg).train()
    rows = _metrics(out)
    assert len(rows) == 2 and all(math.isfinite(r["objective/scores"]) for r in rows)
    assert (out / "policy" / "config.json").is_file()


@pytest.mark.parametrize("critic", ["frozen-reward-model", "auto"])
def test_frozen_reward_model_critic(world, tmp_path, critic):
    """--critic frozen-reward-model trains a value head on the reward model's own trunk:
    warm-started from its score layer, the trunk shared with the scorer (no copy) and never
    changed, its hidden states computed once per rollout. +head (what auto, the default, becomes
    with a reward model that reads the policy's tokens): plus a zero-initialised head on the
    policy trunk. Both heads train 10× faster than the policy."""
    from safetensors.torch import load_file

    from rlhfkit.critic import trunk_of
    from rlhfkit.models import RewardModel

    RewardModel.from_pretrained(world["policy"]).save_pretrained(tmp_path / "rm")
    out = tmp_path / "run"
    trainer = PPOTrainer(_config(world, out, reward_fn=None, reward_model=str(tmp_path / "rm"),
                                 critic=critic, save_every=2))  # fmt: skip
    expected = {"auto": "frozen-reward-model+head"}.get(critic, critic)
    assert trainer.critic_kind == expected
    critic = expected
    rm_model = trainer.reward_model.model
    assert trainer.critic_trunk is trunk_of(rm_model)
    head = trainer.accelerator.unwrap_model(trainer.model).value_head
    assert torch.equal(head.linear.weight, rm_model.score.weight)
    trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not trained & {id(p) for p in rm_model.parameters()}
    # the critic is only a head: 10× the policy's learning rate (measured in docs/ppo.md)
    groups = trainer.optimizer.param_groups
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    if critic.endswith("+head"):
        assert not head.policy_linear.weight.any()
        assert groups[2]["lr"] == pytest.approx(10 * groups[0]["lr"])
        extra = list(head.policy_linear.parameters())
        assert all(p is q for p, q in zip(groups[2]["params"], extra, strict=True))
    else:
        assert head.policy_linear is None and len(groups) == 2
    before = {k: v.clone() for k, v in rm_model.state_dict().items()}
    forwards = []
    trunk_forward = trainer.critic_trunk.forward
    trainer.critic_trunk.forward = lambda *a, **k: forwards.append(1) or trunk_forward(*a, **k)
    trainer.train()
    # per update: one to score, one for the values of the rollout, none in the PPO epochs
    assert len(forwards) == 2 * 2
    assert all(torch.equal(v, rm_model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(head.linear.weight, rm_model.score.weight)  # the head did train
    if critic.endswith("+head"):
        assert head.policy_linear.weight.any()
    rows = _metrics(out)
    assert len(rows) == 2 and all(math.isfinite(r["loss/value"]) for r in rows)
    saved = load_file(str(out / "checkpoints" / "step-2" / "critic.safetensors"))
    assert all(k.startswith("value_head.") for k in saved)  # the trunk is the reward model's
    assert json.loads((out / "config.json").read_text())["critic_resolved"] == critic


def test_frozen_critic_needs_a_reward_model_that_reads_the_policys_tokens(world, tmp_path):
    from rlhfkit.critic import reads_same_tokens

    assert PPOTrainer(_config(world, tmp_path / "a")).critic_kind == "head"  # auto, a reward fn
    for kind in ("frozen-reward-model", "frozen-reward-model+head"):
        with pytest.raises(
            ConfigError,
            match=re.escape(f"--critic {kind} needs a single --reward-model (give one)"),
        ):
            PPOTrainer(_config(world, tmp_path / "b", critic=kind))

    class Vocab:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    assert reads_same_tokens(Vocab({"a": 0, "b": 1}), Vocab({"a": 0, "b": 1, "<pad>": 2}))
    assert not reads_same_tokens(Vocab({"a": 0, "b": 1}), Vocab({"a": 1, "b": 0}))
    assert not reads_same_tokens(Vocab({"a": 0, "b": 1}), Vocab({"a": 0}))


def test_lora_policy_uses_adapters_off_reference(world, tmp_path):
    out = tmp_path / "lora"
    trainer = PPOTrainer(_config(world, out, lora_r=4, lora_target_modules="c_attn", total_episodes=64,
                                 save_every=2))  # fmt: skip
    assert trainer.ref_model is None  # no second copy of the model
    trainer.train()
    rows = _metrics(out)
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # adapters start at zero
    assert rows[-1]["objective/kl"] != 0.0
    assert (out / "checkpoints" / "step-2" / "policy" / "adapter_config.json").is_file()
    assert (out / "policy" / "config.json").is_file()  # merged into a plain model


def test_resume_from_checkpoint_matches_uninterrupted_run(world, tmp_path):
    import shutil

    full = tmp_path / "full"
    PPOTrainer(_config(world, full, total_episodes=128, save_every=2, save_total_limit=4)).train()
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step-2", part / "checkpoints" / "step-2")
    PPOTrainer(_config(world, part, total_episodes=128, save_every=2, resume=True)).train()
    from safetensors.torch import load_file

    a = load_file(str(full / "policy" / "model.safetensors"))
    b = load_file(str(part / "policy" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in _metrics(part)] == [3, 4]
    assert _metrics(part)[-1]["objective/scores"] == _metrics(full)[-1]["objective/scores"]
    with pytest.raises(Exception, match="settings differ"):
        PPOTrainer(_config(world, part, total_episodes=128, batch_size=16, resume=True))


@pytest.mark.slow  # two interpreter start-ups: ~40 s on a busy 2-core machine
def test_cli_subprocess(world, tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    yaml = tmp_path / "run.yaml"
    yaml.write_text("response-length: 8\nkl_coef: 0.1\nprogress: false\n")
    cmd = [sys.executable, "-m", "rlhfkit", "ppo", "--policy", world["policy"], "--prompts",
           world["prompts"], "--reward-fn", world["reward"], "--out", str(out), "--total-episodes",
           "32", "--batch-size", "16", "--seed", "3", "--config", str(yaml)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "policy saved" in proc.stderr
    rows = _metrics(out)
    assert len(rows) == 2 and rows[0]["objective/kl_coef"] == 0.1
    assert json.loads((out / "config.json").read_text())["response_length"] == 8


def test_cli_bad_input_is_a_clear_error(world, tmp_path, capsys):
    from rlhfkit.cli import main

    def argv(prompts, reward):
        return ["ppo", "--policy", world["policy"], "--prompts", prompts, "--reward-fn", reward,
                "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip

    assert main(argv(str(tmp_path / "missing.jsonl"), world["reward"])) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(argv(world["prompts"], "nope.py:f")) == 2
    assert "nope.py" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_value_head_learns_faster_than_the_policy_by_default(world):
    cfg = _config(world, world["root"] / "head_lr")
    trainer = PPOTrainer(cfg)
    groups = trainer.optimizer.param_groups
    head = trainer.accelerator.unwrap_model(trainer.model).value_head
    assert all(p is q for p, q in zip(groups[1]["params"], head.parameters(), strict=True))
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    for head_only in ("frozen-reward-model", "frozen-reward-model+head"):
        assert cfg.value_head_lr_multiplier(head_only) == 10.0
    for separate in ("policy", "reward-model"):  # a head trained with its own backbone
        assert cfg.value_head_lr_multiplier(separate) == 1.0
    scaled = PPOConfig(**{**cfg.__dict__, "value_head_lr_scale": 3.0})
    assert scaled.value_head_lr_multiplier("head") == 3.0
    with pytest.raises(ValueError, match="value-head-lr-scale"):
        _config(world, world["root"] / "x", value_head_lr_scale=0.0)
