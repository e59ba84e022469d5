"""Per-ranking ``weight``: read, validated and written by rlhfkit.data; honoured by the
Bradley-Terry loss and by reward training (weight 0 = no effect, weight 2 = the record twice)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfkit.data import read_preferences, write_pairs, write_rankings
from rlhfkit.errors import DataError
from rlhfkit.losses import grouped_ranking_loss, ranking_loss
from rlhfkit.models import RewardModel
from rlhfkit.reward.batching import collate_items, loss_weights, prepare_items
from rlhfkit.tiny import build_tiny_causal_lm


def native(weight=None, prompt="p", **extra) -> dict:
    rec = {
        "prompt": prompt,
        "responses": [{"id": "a", "text": "good answer"}, {"id": "b", "text": "bad answer"}],
        "ranking": ["a", "b"],
        **extra,
    }
    if weight is not None:
        rec["weight"] = weight
    return rec


def write(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---- data: read, validate, write ---------------------------------------------------------------


def test_weight_is_read_and_written_back(tmp_path):
    src = write(tmp_path / "in.jsonl", [native(0.25), native(), native(2)])
    data = read_preferences(src)
    assert [r.weight for r in data] == [0.25, None, 2.0]
    out = tmp_path / "out.jsonl"
    write_rankings(out, data)
    back = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r.get("weight") for r in back] == [0.25, None, 2.0]
    assert "meta" not in back[0]  # the weight is a field of its own, not an extra kept in meta


@pytest.mark.parametrize(
    "bad, message",
    [
        (-1, "weight must be a non-negative finite number, got -1"),
        ("high", "weight must be a non-negative number, got a string"),
        (True, "weight must be a non-negative number, got a boolean"),
        ([1], "weight must be a non-negative number, got a list"),
    ],
)
def test_bad_weight_names_file_and_line(tmp_path, bad, message):
    src = write(tmp_path / "in.jsonl", [native(1), native(bad)])
    with pytest.raises(DataError) as e:
        read_preferences(src)
    assert str(e.value) == f"{src}:2: {message}"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_weight_is_refused(tmp_path, literal):
    src = tmp_path / "in.jsonl"
    line = json.dumps(native()).rstrip("}") + f', "weight": {literal}}}'
    src.write_text(json.dumps(native()) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"in\.jsonl:2: weight must be a non-negative finite"):
        read_preferences(src)


def test_weight_survives_pairs_both_ways_and_parquet(tmp_path):
    three = {
        "prompt": "q",
        "responses": [{"id": x, "text": f"answer {x}"} for x in "abc"],
        "ranking": ["a", ["b", "c"]],
        "weight": 0.5,
    }
    data = read_preferences(write(tmp_path / "r.jsonl", [three, native()]))
    pairs = tmp_path / "pairs.jsonl"
    assert write_pairs(pairs, data) == 3
    rows = [json.loads(x) for x in pairs.read_text().splitlines()]
    assert [r.get("weight") for r in rows] == [0.5, 0.5, None]
    again = read_preferences(pairs)
    assert [r.weight for r in again] == [0.5, 0.5, None]
    pytest.importorskip("pyarrow")
    pq = tmp_path / "pairs.parquet"
    write_pairs(pq, data)
    assert [r.weight for r in read_preferences(pq)] == [0.5, 0.5, None]


def test_hh_record_weight(tmp_path):
    rec = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello",
        "rejected": "\n\nHuman: hi\n\nAssistant: go away",
        "weight": 3,
    }
    (r,) = read_preferences(write(tmp_path / "hh.jsonl", [rec]))
    assert r.weight == 3.0 and "weight" not in r.meta


def test_data_convert_and_stats_cli(tmp_path):
    src = write(tmp_path / "in.jsonl", [native(0.0), native(1.5), native()])
    out = tmp_path / "pairs.jsonl"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "rlhfkit", "data", *a], capture_output=True, text=True
    )
    r = run("convert", str(src), str(out), "--to", "pairs")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x).get("weight") for x in out.read_text().splitlines()] == [0.0, 1.5, None]
    stats = json.loads(run("stats", str(src), "--json").stdout)
    assert stats["records_with_weight"] == 2 and stats["records_with_zero_weight"] == 1
    bad = write(tmp_path / "bad.jsonl", [native(), native(-2)])
    r = run("convert", str(bad), str(tmp_path / "x.jsonl"), "--to", "pairs")
    assert r.returncode == 2 and f"{bad}:2: weight must be" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()


# ---- the loss ----------------------------------------------------------------------------------


def _three_prompts():
    rewards = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5, 0.3, -0.2, 0.1, 0.9], dtype=torch.float64)
    group_ids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    ranks = torch.tensor([1, 2, 3, 2, 1, 3, 3, 2, 1])
    return rewards, group_ids, ranks


def test_weighted_loss_is_the_weighted_mean_hand_computed():
    rewards, group_ids, ranks = _three_prompts()
    per_prompt = [ranking_loss(rewards[group_ids == g], ranks[group_ids == g]) for g in range(3)]
    w = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64)
    loss, _ = grouped_ranking_loss(rewards, group_ids, ranks, weights=w)
    expected = (0.5 * per_prompt[0] + 2.0 * per_prompt[1]) / 2.5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    # unit weights are the plain mean
    ones, _ = grouped_ranking_loss(rewards, group_ids, ranks, weights=torch.ones(3))
    plain, _ = grouped_ranking_loss(rewards, group_ids, ranks)
    assert ones.item() == pytest.approx(plain.item(), rel=1e-12)


def _grad(rewards, group_ids, ranks, **kw):
    r = rewards.clone().requires_grad_(True)
    loss, _ = grouped_ranking_loss(r, group_ids, ranks, **kw)
    loss.backward()
    return loss.detach(), r.grad


def test_weight_zero_adds_nothing_to_the_gradient():
    rewards, group_ids, ranks = _three_prompts()
    w = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    loss, grad = _grad(rewards, group_ids, ranks, weights=w)
    assert torch.all(grad[group_ids == 1] == 0)
    # ... and equals the loss and gradient without that prompt at all
    keep = group_ids != 1
    loss2, grad2 = _grad(rewards[keep], torch.tensor([0, 0, 0, 1, 1]), ranks[keep])
    assert loss.item() == pytest.approx(loss2.item(), rel=1e-12)
    assert torch.allclose(grad[keep], grad2, rtol=1e-12)
    # all weights zero: loss 0, gradient 0, nothing NaN
    loss0, grad0 = _grad(rewards, group_ids, ranks, weights=torch.zeros(3))
    assert loss0.item() == 0 and torch.all(grad0 == 0)


def test_weight_two_equals_duplicating():
    rewards, group_ids, ranks = _three_prompts()
    w = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    loss, grad = _grad(rewards, group_ids, ranks, weights=w)
    # prompt 1 appended a second time, as group 3
    dup = group_ids == 1
    r2 = torch.cat([rewards, rewards[dup]]).requires_grad_(True)
    g2 = torch.cat([group_ids, torch.full((int(dup.sum()),), 3)])
    k2 = torch.cat([ranks, ranks[dup]])
    loss2, _ = grouped_ranking_loss(r2, g2, k2)
    loss2.backward()
    folded = r2.grad[: len(rewards)].clone()
    folded[dup] += r2.grad[len(rewards) :]
    assert loss.item() == pytest.approx(loss2.item(), rel=1e-12)
    assert torch.allclose(grad, folded, rtol=1e-12)


def test_weight_total_splits_a_batch_into_parts_exactly():
    rewards, group_ids, ranks = _three_prompts()
    w = torch.tensor([0.3, 2.0, 1.0], dtype=torch.float64)
    full, grad_full = _grad(rewards, group_ids, ranks, weights=w)
    total = float(w.sum())
    grad_parts = torch.zeros_like(rewards)
    loss_parts = 0.0
    for part in ([0], [1, 2]):  # two micro-batches, accumulated as loss / 2
        mask = torch.isin(group_ids, torch.tensor(part))
        gids = torch.unique(group_ids[mask], return_inverse=True)[1]
        loss, g = _grad(rewards[mask], gids, ranks[mask], weights=w[part], weight_total=total / 2)
        loss_parts += loss.item() / 2
        grad_parts[mask] += g / 2
    assert loss_parts == pytest.approx(full.item(), rel=1e-12)
    assert torch.allclose(grad_parts, grad_full, rtol=1e-12)


# ---- the trainer's batches -------------------------------------------------------------------

WORDS = ["good", "bad", "answer", "fine", "poor", "p", "q", "r", "s"]


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    path = build_tiny_causal_lm(tmp_path_factory.mktemp("w") / "lm", WORDS, n_layer=1, n_embd=16)
    return RewardModel.from_pretrained(path)


def _records():
    texts = ["good answer", "fine answer", "bad poor answer", "poor answer"]
    out = []
    for i, prompt in enumerate(["p", "q", "r", "s"]):
        rs = [{"id": f"x{j}", "text": texts[(i + j) % 4]} for j in range(3)]
        out.append({"prompt": prompt, "responses": rs, "ranking": ["x0", ["x1", "x2"]]})
    return out


def _trainer_grads(rm, records, parts=1):
    from rlhfkit.data import ranking_from_native

    rankings = [ranking_from_native(r) for r in records]
    items, _ = prepare_items(rm, rankings, "truncate", use_margin=False)
    rm.model.zero_grad()
    total = sum(it.weight for it in items)
    size = len(items) // parts
    for m in range(parts):
        part = items[m * size : (m + 1) * size]
        batch, group_ids, ranks, _ = collate_items(rm, part)
        rewards = rm.raw_rewards(batch)
        loss, _ = grouped_ranking_loss(
            rewards, group_ids, ranks, **loss_weights(part, total, parts, ranks.device)
        )
        (loss / parts).backward()
    return [p.grad.clone() for p in rm.model.parameters() if p.grad is not None]


def _close(a, b):
    return all(torch.allclose(x, y, atol=1e-6, rtol=1e-4) for x, y in zip(a, b, strict=True))


def test_trainer_weight_two_equals_the_record_twice_and_zero_equals_absent(tiny_rm):
    recs = _records()
    weighted = [dict(r, weight=w) for r, w in zip(recs, [1, 2, 1, 0], strict=True)]
    duplicated = [recs[0], recs[1], recs[1], recs[2]]
    assert _close(_trainer_grads(tiny_rm, weighted), _trainer_grads(tiny_rm, duplicated))
    # the split into micro-batches does not change it (weights normalized by the whole batch)
    assert _close(_trainer_grads(tiny_rm, weighted, parts=2), _trainer_grads(tiny_rm, weighted))
    # and weights that differ do change the gradient (the test can fail)
    assert not _close(_trainer_grads(tiny_rm, weighted), _trainer_grads(tiny_rm, recs))


def test_train_rm_refuses_all_zero_weights(tmp_path):
    from rlhfkit.reward_training import RewardConfig, train_reward_model

    lm = build_tiny_causal_lm(tmp_path / "lm", WORDS, n_layer=1, n_embd=16)
    data = write(tmp_path / "zero.jsonl", [dict(r, weight=0) for r in _records()])
    cfg = RewardConfig(
        model=str(lm), data=str(data), out=str(tmp_path / "rm"), eval_split=0, progress=False
    )
    with pytest.raises(DataError, match="every training ranking has weight 0"):
        train_reward_model(cfg)
