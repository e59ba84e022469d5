"""Reward-model training that forwards each ranking's prompt once (``share_prompt``): the same
rewards and gradients as full-sequence forwards, each response forwarded once, the prompt once."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rlhfkit.data import read_preferences
from rlhfkit.losses import grouped_ranking_loss
from rlhfkit.models import RewardModel
from rlhfkit.reward import RewardConfig, train_reward_model
from rlhfkit.reward.batching import (
    can_share_prompt,
    collate_items,
    group_tensors,
    prepare_items,
    shared_prefix_length,
    shared_prompt_rewards,
)
from rlhfkit.tiny import build_tiny_causal_lm

WORDS = ["tell", "me", "about", "cats", "dogs", "and", "more", ":", "good", "bad", "ok", "very"]


def _rankings(n: int, seed: int) -> list[dict]:
    """Prompts of different lengths, K of 2-4, ranked by the number of 'good' minus 'bad'."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        prompt = " ".join(["tell", "me", "about", *rng.choices(["cats", "dogs", "and", "more"], k=rng.randint(0, 4)), ":"])  # fmt: skip
        k = rng.randint(2, 4)
        resp = [" ".join(rng.choices(["good", "bad", "ok", "very"], k=rng.randint(1, 7))) for _ in range(k)]  # fmt: skip
        q = [r.split().count("good") - r.split().count("bad") for r in resp]
        if len(set(q)) < k:
            continue
        ids = [f"r{i}" for i in range(k)]
        order = sorted(range(k), key=lambda i: -q[i])
        out.append({"prompt": prompt, "responses": [{"id": ids[i], "text": resp[i]} for i in range(k)],
                    "ranking": [ids[i] for i in order]})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    lm = build_tiny_causal_lm(root / "lm", WORDS, n_layer=2, n_embd=32, n_positions=64)
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rankings(48, seed=0)), encoding="utf-8")
    return {"root": root, "lm": lm, "train": path}


def test_shared_prefix_length_hand_cases():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    # capped so that each sequence keeps a token of its own (its score is read at its last token)
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2]]) == 1
    assert shared_prefix_length([[7, 2], [8, 2]]) == 0
    assert shared_prefix_length([[5], [5, 6]]) == 0


def test_shared_prompt_rewards_and_gradients_equal_full_forwards(world):
    rm = RewardModel.from_pretrained(world["lm"])
    rm.model.train()
    assert can_share_prompt(rm.model)
    items, _ = prepare_items(rm, list(read_preferences(world["train"]))[:12], "truncate", False)
    prefixes = {it.prefix for it in items}
    assert len(prefixes) > 2 and min(prefixes) >= 4  # prompts of several lengths, all shared
    batch, group_ids, ranks, _ = collate_items(rm, items)
    full = rm.raw_rewards(batch)
    loss_full, _ = grouped_ranking_loss(full, group_ids, ranks)
    grads_full = torch.autograd.grad(loss_full, list(rm.model.parameters()), allow_unused=True)

    shared = shared_prompt_rewards(rm.model, items, rm.tokenizer.pad_token_id)
    g2, r2, _ = group_tensors(items, shared.device)
    assert torch.equal(g2, group_ids) and torch.equal(r2, ranks)
    loss_shared, _ = grouped_ranking_loss(shared, g2, r2)
    grads_shared = torch.autograd.grad(loss_shared, list(rm.model.parameters()), allow_unused=True)

    torch.testing.assert_close(shared, full, rtol=1e-5, atol=1e-5)
    assert loss_shared.item() == pytest.approx(loss_full.item(), rel=1e-5)
    n_checked = 0
    for a, b in zip(grads_full, grads_shared, strict=True):
        if a is None:
            assert b is None or not b.any()
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        n_checked += 1
    assert n_checked > 10


def test_training_forwards_each_prompt_once_and_each_response_once(world, tmp_path, monkeypatch):
    calls: list[int] = []
    real = RewardModel.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        rm = real(cls, *args, **kwargs)
        rm.model.base_model.register_forward_hook(
            lambda mod, a, kw, out: calls.append(kw["input_ids"].shape) if mod.training else None,
            with_kwargs=True,
        )
        return rm

    monkeypatch.setattr(RewardModel, "from_pretrained", classmethod(counted))
    cfg = RewardConfig(
        model=str(world["lm"]), data=str(world["train"]), out=str(tmp_path / "rm"), eval_split=0,
        batch_size=8, epochs=1, learning_rate=1e-3, progress=False,
    )  # fmt: skip
    train_reward_model(cfg)
    # 48 prompts / 8 per step: per step, the 8 prompts in one forward, then their responses.
    assert len(calls) == 2 * 6
    rankings = list(read_preferences(world["train"]))
    for step in range(6):
        prompts, responses = calls[2 * step], calls[2 * step + 1]
        assert prompts[0] == 8
        assert 16 <= responses[0] <= 32  # K of 2-4: every response once
    assert sum(calls[2 * s + 1][0] for s in range(6)) == sum(len(r.responses) for r in rankings)


def test_shared_and_full_training_end_at_the_same_weights(world, tmp_path):
    from transformers import AutoModelForSequenceClassification

    outs = {}
    for share in (True, False):
        cfg = RewardConfig(
            model=str(world["lm"]), data=str(world["train"]), out=str(tmp_path / f"rm-{share}"),
            eval_split=0, batch_size=8, epochs=2, learning_rate=1e-3, progress=False,
            normalize=False, share_prompt=share,
        )  # fmt: skip
        train_reward_model(cfg)
        outs[share] = AutoModelForSequenceClassification.from_pretrained(Path(cfg.out))
    a, b = (dict(outs[s].named_parameters()) for s in (True, False))
    start = dict(AutoModelForSequenceClassification.from_pretrained(world["lm"]).named_parameters())
    moved = max((b[k] - start[k]).abs().max().item() for k in b if k in start)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-3  # training did move the weights
    assert diff < 3e-3  # Adam: float-order noise moves a coordinate by at most ~one lr step
