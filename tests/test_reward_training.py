"""Ranking-native reward training: one forward per response, equality with the pairwise-expanded
Bradley-Terry loss, learning on rankings whose quality is a known function of the text, resume."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhfkit.errors import ConfigError
from rlhfkit.losses import bradley_terry_loss
from rlhfkit.models import RewardModel
from rlhfkit.reward import RewardConfig, pair_metrics, train_reward_model
from rlhfkit.reward.batching import (
    batch_indices,
    collate_items,
    epoch_order,
    prepare_items,
    split_by_prompt,
)
from rlhfkit.tiny import build_tiny_causal_lm

FILLER = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "and",
    "it",
    "was",
    "very",
    "today",
    "we",
    "saw",
    "some",
    "of",
    "that",
    "here",
]
TOPICS = ["apples", "rivers", "clouds", "trains", "music", "stars", "cars", "books"]
WORDS = [*FILLER, *TOPICS, "great", "awful", "tell", "me", "about"]


def quality(text: str) -> int:
    """The known truth: each 'great' is worth +1, each 'awful' -1, everything else 0."""
    words = text.split()
    return words.count("great") - words.count("awful")


def make_rankings(n: int, seed: int, k: int = 4) -> list[dict]:
    """K = 4 responses per prompt, ranked by quality(); equal quality is a tie."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        prompt = f"tell me about {rng.choice(TOPICS)}"
        responses = []
        for i in range(k):
            words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
            words += ["great"] * rng.randint(0, 3) + ["awful"] * rng.randint(0, 3)
            rng.shuffle(words)
            responses.append({"id": "abcdefgh"[i], "text": " ".join(words)})
        levels = sorted({quality(r["text"]) for r in responses}, reverse=True)
        if len(levels) < 2:
            continue
        ranking = []
        for lv in levels:
            ids = [r["id"] for r in responses if quality(r["text"]) == lv]
            ranking.append(ids if len(ids) > 1 else ids[0])
        out.append({"prompt": prompt, "responses": responses, "ranking": ranking})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    lm = build_tiny_causal_lm(root / "tiny", WORDS, n_layer=2, n_embd=32)
    train = make_rankings(400, seed=1)
    assert any(any(isinstance(g, list) for g in r["ranking"]) for r in train)  # ties present
    return {
        "root": root,
        "lm": lm,
        "train": write_jsonl(root / "train.jsonl", train),
        "eval": write_jsonl(root / "eval.jsonl", make_rankings(100, seed=2)),
        "small": write_jsonl(root / "small.jsonl", train[:40]),
    }


# ------------------------------------------------------------------------------ pure parts


def test_pair_metrics_hand_computed():
    # Prompt 1: ranks a > b = c (b, c tied): pairs (a,b), (a,c). Scores 2, 1, 3 → 1 of 2 right.
    # Prompt 2: x > y, scores equal → a tie in score is wrong (strict >).
    m = pair_metrics([torch.tensor([2.0, 1.0, 3.0]), torch.tensor([0.5, 0.5])], [[1, 2, 2], [1, 2]])
    assert m["n_pairs"] == 3 and m["accuracy"] == pytest.approx(1 / 3)
    assert m["margin"] == pytest.approx((1.0 - 1.0 + 0.0) / 3)
    sig = lambda x: -torch.nn.functional.logsigmoid(torch.tensor(x)).item()  # noqa: E731
    assert m["loss"] == pytest.approx(((sig(1.0) + sig(-1.0)) / 2 + sig(0.0)) / 2)
    assert m["top1_accuracy"] == 0.0  # a is not the top score; x does not beat y strictly


def test_split_by_prompt_keeps_prompts_on_one_side():
    from rlhfkit.data import Ranking, Response

    rs = [
        Ranking(f"p{i % 10}", [Response("a", "x"), Response("b", "y")], ["a", "b"])
        for i in range(50)
    ]
    train, held = split_by_prompt(rs, 0.2, seed=0)
    assert len(train) + len(held) == 50
    assert {r.prompt for r in train}.isdisjoint({r.prompt for r in held})
    assert len({r.prompt for r in held}) == 2
    assert split_by_prompt(rs, 0.2, seed=0) == (train, held)


def test_batches_cover_every_prompt_each_epoch_and_fill_the_last():
    order = epoch_order(10, epoch=0, seed=3)
    assert sorted(order) == list(range(10))
    assert order != epoch_order(10, epoch=1, seed=3)
    batches = [batch_indices(order, s, 4) for s in range(3)]
    assert all(len(b) == 4 for b in batches)
    assert {i for b in batches for i in b} == set(range(10))
    assert batches[2][2:] == order[:2]  # wrapped around


# --------------------------------------------------------- one forward, pairwise equality


def _row_counter(model):
    rows = []
    handle = model.register_forward_hook(
        lambda mod, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return rows, handle


def test_one_forward_per_response_equals_pairwise_expanded_bt(world):
    from rlhfkit.data import read_preferences

    rm = RewardModel.from_pretrained(world["lm"])
    rankings = list(read_preferences(world["train"]))[:6]
    assert any(r.has_ties for r in rankings)
    items, _ = prepare_items(rm, rankings, "truncate", use_margin=False)
    rows, handle = _row_counter(rm.model)

    # Ranking-native: every response once, one forward.
    from rlhfkit.losses import grouped_ranking_loss

    batch, group_ids, ranks, _ = collate_items(rm, items)
    rewards = rm.raw_rewards(batch)
    loss, _ = grouped_ranking_loss(rewards, group_ids, ranks)
    loss.backward()
    native_grad = [p.grad.clone() for p in rm.model.parameters()]
    native_rows = sum(rows)
    assert native_rows == sum(len(r.responses) for r in rankings) == 24
    rm.model.zero_grad()
    rows.clear()

    # Pairwise-expanded (TRL style): every ordered pair forwards chosen and rejected.
    per_prompt = []
    for r in rankings:
        pairs = r.pairs()
        chosen = rm.raw_rewards(
            rm.collate(rm.encode([r.prompt] * len(pairs), [w.text for w, _ in pairs])[0])
        )
        rejected = rm.raw_rewards(
            rm.collate(rm.encode([r.prompt] * len(pairs), [lo.text for _, lo in pairs])[0])
        )
        per_prompt.append(bradley_terry_loss(chosen, rejected))
    expanded = torch.stack(per_prompt).mean()
    expanded.backward()
    n_pairs = sum(len(r.pairs()) for r in rankings)
    assert sum(rows) == 2 * n_pairs > native_rows
    handle.remove()

    torch.testing.assert_close(loss, expanded, rtol=1e-5, atol=1e-6)
    for g1, p in zip(native_grad, rm.model.parameters(), strict=True):
        torch.testing.assert_close(g1, p.grad, rtol=1e-4, atol=1e-6)


def test_training_forwards_each_response_once_per_step(world, tmp_path, monkeypatch):
    rows: list[int] = []
    real = RewardModel.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        rm = real(cls, *args, **kwargs)
        rm.model.register_forward_hook(
            lambda mod, a, kw, out: rows.append(kw["input_ids"].shape[0]) if mod.training else None,
            with_kwargs=True,
        )
        return rm

    monkeypatch.setattr(RewardModel, "from_pretrained", classmethod(counted))
    cfg = RewardConfig(
        model=str(world["lm"]), data=str(world["small"]), out=str(tmp_path / "rm"), eval_split=0,
        batch_size=8, gradient_accumulation_steps=2, epochs=2, learning_rate=1e-3, progress=False,
        share_prompt=False,  # the full-sequence path (the shared-prompt one: its own test file)
    )  # fmt: skip
    train_reward_model(cfg)
    steps = 2 * 5  # 40 prompts / 8 per step, 2 epochs
    assert len(rows) == steps * 2  # one forward per micro-batch
    assert rows == [4 * 4] * (steps * 2)  # 4 prompts × K = 4 responses, each exactly once


# ------------------------------------------------------------------------------ acceptance


def test_train_rm_learns_the_known_preference(world, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "rm"
    cfg = RewardConfig(
        model=str(world["lm"]), data=str(world["train"]), eval_data=str(world["eval"]),
        out=str(out), epochs=1, batch_size=16, learning_rate=3e-3, seed=0, logging_steps=5,
        progress=False,
    )  # fmt: skip
    results = train_reward_model(cfg)
    ev = json.loads((out / "eval.json").read_text())
    assert ev["accuracy"] == pytest.approx(results["accuracy"])
    assert ev["accuracy"] >= 0.9, ev  # measured 0.986 (chance: 0.5)
    assert ev["n_rankings"] == 100 and ev["normalized"] is True
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [5, 10, 15, 20, 25]
    for key in ("rm/loss", "rm/accuracy", "rm/margin", "rm/lr", "epoch"):
        assert key in metrics[-1]
    assert metrics[-1]["rm/loss"] < metrics[0]["rm/loss"]
    assert metrics[-1]["rm/lr"] < metrics[0]["rm/lr"]  # linear decay
    assert all(m["perf/responses_per_step"] == 16 * 4 for m in metrics)  # each response once

    # Plain transformers loads it and ranks a clearly better response above a clearly worse one.
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert hf.config.num_labels == 1
    texts = [
        "tell me about cats\nthe cat sat great great great" + tok.eos_token,
        "tell me about cats\nthe cat sat awful awful awful" + tok.eos_token,
    ]
    with torch.no_grad():
        better, worse = hf(**tok(texts, return_tensors="pt", padding=True)).logits.squeeze(-1)
    assert better > worse

    # Every trainable backbone tensor moved away from the causal LM it started from.
    base = AutoModelForSequenceClassification.from_pretrained(world["lm"], num_labels=1)
    base_params = dict(base.named_parameters())
    for name, p in hf.named_parameters():
        if name in base_params and name != "score.weight":
            assert not torch.equal(p, base_params[name]), f"{name} did not change"

    # rlhfkit score adds a normalized score to each response; better > worse again.
    from rlhfkit.cli import main as cli

    cands = write_jsonl(
        tmp_path / "cands.jsonl",
        [{"prompt": "tell me about cats", "responses": [
            {"id": "x", "text": "the cat sat great great great"},
            {"id": "y", "text": "the cat sat awful awful awful"}]},
         {"prompt": "tell me", "response": "great great"},
         {"prompt": "tell me", "chosen": "great", "rejected": "awful"}],
    )  # fmt: skip
    scored = tmp_path / "scored.jsonl"
    assert cli(["score", "--model", str(out), "--data", str(cands), "--out", str(scored)]) == 0
    recs = [json.loads(x) for x in scored.read_text().splitlines()]
    assert recs[0]["responses"][0]["score"] > recs[0]["responses"][1]["score"]
    assert recs[0]["prompt"] == "tell me about cats" and recs[0]["responses"][0]["id"] == "x"
    assert isinstance(recs[1]["score"], float)
    assert recs[2]["chosen_score"] > recs[2]["rejected_score"]


def test_train_rm_cli_subprocess(world, tmp_path):
    out = tmp_path / "rm"
    cmd = [
        sys.executable, "-m", "rlhfkit", "train-rm", "--model", str(world["lm"]),
        "--data", str(world["small"]), "--out", str(out), "--eval-split", "0.2",
        "--batch-size", "8", "--learning-rate", "1e-3", "--seed", "3",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["accuracy"] == json.loads((out / "eval.json").read_text())["accuracy"]
    # 20% of the 8 distinct prompts (with all their rankings) held out, and said so: rankings
    # are counted as rankings, the prompts they share as prompts.
    assert 0 < printed["n_rankings"] < 40
    n_held = printed["n_rankings"]
    assert f"{40 - n_held} training rankings of 6 prompts" in proc.stderr, proc.stderr
    assert f"{n_held} held out (2 prompts)" in proc.stderr, proc.stderr
    assert f"pairs of {n_held} rankings of 2 prompts" in proc.stderr, proc.stderr
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "metrics.jsonl").read_text().strip()
    # A second run into the same OUT is refused with a message, exit status 2.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_exact_resume_reproduces_an_uninterrupted_run(world, tmp_path):
    common = dict(
        model=str(world["lm"]), data=str(world["small"]), eval_split=0.1, batch_size=8, epochs=2,
        learning_rate=1e-3, save_every=2, save_total_limit=None, progress=False, logging_steps=1,
        normalize=False,
    )  # fmt: skip
    full = tmp_path / "full"
    train_reward_model(RewardConfig(out=str(full), **common))
    steps = sorted(int(p.name[5:]) for p in (full / "checkpoints").iterdir())
    assert steps == [
        2,
        4,
        5,
        6,
        8,
    ]  # every 2 steps and each epoch's end (4 steps/epoch... 36/8 → 5)

    # Simulate a crash after step 6: keep only checkpoints up to 4 and a metrics tail past it.
    crashed = tmp_path / "crashed"
    shutil.copytree(full, crashed)
    for s in (5, 6, 8):
        shutil.rmtree(crashed / "checkpoints" / f"step-{s}")
    (crashed / "model.safetensors").unlink()
    train_reward_model(RewardConfig(out=str(crashed), resume=True, **common))

    from safetensors.torch import load_file

    a, b = load_file(full / "model.safetensors"), load_file(crashed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    m_full = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    m_res = [json.loads(x) for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in m_res] == [m["step"] for m in m_full]
    for x, y in zip(m_full, m_res, strict=True):
        assert x["rm/loss"] == pytest.approx(y["rm/loss"], rel=1e-6)

    with pytest.raises(ConfigError, match="changed settings"):
        train_reward_model(RewardConfig(out=str(crashed), resume=True, **{**common, "seed": 1}))


def test_refuses_to_mix_runs_and_checks_batch_divisibility(world, tmp_path):
    out = tmp_path / "rm"
    (out / "checkpoints").mkdir(parents=True)
    cfg = dict(model=str(world["lm"]), data=str(world["small"]), progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train_reward_model(RewardConfig(out=str(out), **cfg))
    with pytest.raises(ConfigError, match="divisible"):
        train_reward_model(
            RewardConfig(
                out=str(tmp_path / "x"), batch_size=6, gradient_accumulation_steps=4, **cfg
            )
        )
    with pytest.raises(ValueError, match="epochs"):
        RewardConfig(out="x", epochs=0, **cfg)


def test_overlong_items_are_truncated_or_dropped_and_counted(world):
    from rlhfkit.data import Ranking, Response

    rm = RewardModel.from_pretrained(world["lm"], max_length=8)
    long = " ".join(["the"] * 20)
    r = Ranking(
        "tell me",
        [Response("a", long), Response("b", "great"), Response("c", "awful")],
        ["b", "a", "c"],
    )
    items, counts = prepare_items(rm, [r], "truncate", use_margin=True)
    assert counts["overlong"] == 1 and len(items[0].features) == 3
    assert max(len(f["input_ids"]) for f in items[0].features) == 8
    items, counts = prepare_items(rm, [r], "drop", use_margin=True)
    assert counts["dropped_responses"] == 1 and items[0].ranks == [1, 3]
    two = Ranking("tell me", [Response("a", long), Response("b", "great")], ["b", "a"])
    items, counts = prepare_items(rm, [two], "drop", use_margin=True)
    assert items == [] and counts["dropped_rankings"] == 1


def test_yaml_config_and_cli_errors(world, tmp_path, capsys):
    from rlhfkit.cli import main as cli

    cfg = tmp_path / "rm.yaml"
    cfg.write_text(
        f"model: {world['lm']}\ndata: {world['small']}\nbatch-size: 7\ngradient_accumulation_steps: 2\n"
    )
    assert cli(["train-rm", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "batch_size 7 must be divisible" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_encoder_trains_as_a_reward_model_backbone(tmp_path):
    """The pretrained all-MiniLM-L6-v2 (an encoder, text pairs) learns the same preference."""
    from transformers import AutoModelForSequenceClassification

    from rlhfkit.models import minilm_path

    train = write_jsonl(tmp_path / "train.jsonl", make_rankings(120, seed=11))
    held = write_jsonl(tmp_path / "held.jsonl", make_rankings(40, seed=12))
    out = tmp_path / "rm-minilm"
    result = train_reward_model(
        RewardConfig(
            model=str(minilm_path()), data=str(train), eval_data=str(held), out=str(out),
            epochs=2, batch_size=8, learning_rate=5e-5, max_length=64, seed=0, progress=False,
        )
    )  # fmt: skip
    assert result["accuracy"] >= 0.8
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1
