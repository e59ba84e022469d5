"""Atomic checkpoints: round trip of every piece of state, atomicity, pruning."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rlhfkit.errors import ConfigError
from rlhfkit.runtime import checkpoint as ckpt_mod
from rlhfkit.runtime.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from rlhfkit.tiny import build_tiny_causal_lm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_causal_lm(
        tmp_path_factory.mktemp("lm"), ["a", "b", "c"], n_layer=1, n_embd=16
    )
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _trained_optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda u: 1 - u / 10)
    loss = model(input_ids=torch.tensor([[4, 5, 6]]), labels=torch.tensor([[4, 5, 6]])).loss
    loss.backward()
    opt.step()
    sched.step()
    return opt, sched


def test_round_trip_restores_everything(tmp_path, tiny):
    from transformers import AutoModelForCausalLM

    model, tok = tiny
    opt, sched = _trained_optimizer(model)
    head = {"value_head.linear.weight": torch.randn(1, 16)}
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    rng = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    state = {"step": 7, "data": {"epoch": 1, "cursor": 5, "n": 9}, "kl_controller": {"value": 0.1}}
    path = save_checkpoint(
        tmp_path, 7, state=state, models={"policy": model}, tokenizers={"policy": tok},
        tensors={"critic": head}, objects={"optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(), "rng": [rng]},
    )  # fmt: skip
    assert path == tmp_path / "checkpoints" / "step-7"
    ck = load_checkpoint(latest_checkpoint(tmp_path))
    assert ck.state == state
    loaded = AutoModelForCausalLM.from_pretrained(ck.model_dir("policy"))
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    torch.testing.assert_close(
        ck.tensors("critic")["value_head.linear.weight"], head["value_head.linear.weight"]
    )
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(ck.object("optimizer"))
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and s1["step"] == s2["step"]
    assert ck.object("scheduler")["last_epoch"] == 1
    random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(ck.object("rng")[0])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, state={"step": 1}, objects={"x": torch.ones(2)})

    def boom(*a, **k):
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(ckpt_mod.torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, state={"step": 2}, objects={"x": torch.ones(2)})
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1"]
    assert load_checkpoint(latest_checkpoint(tmp_path)).state == {"step": 1}
    # a temp dir left behind by SIGKILL (no cleanup ran) is never taken for a checkpoint
    (tmp_path / "checkpoints" / ".step-3.abc.tmp").mkdir()
    (tmp_path / "checkpoints" / ".step-3.abc.tmp" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path).name == "step-1"


def test_overwriting_same_step_is_atomic(tmp_path):
    save_checkpoint(tmp_path, 4, state={"v": 1})
    save_checkpoint(tmp_path, 4, state={"v": 2})
    assert load_checkpoint(tmp_path / "checkpoints" / "step-4").state == {"v": 2}


def test_keep_last_n(tmp_path):
    for step in (2, 4, 6, 8, 10):
        save_checkpoint(tmp_path, step, state={"step": step}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [8, 10]  # numeric, not string, order


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path) is None
