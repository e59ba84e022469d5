"""The demo world: content, gold utility, simulated annotators, training distribution, tokenizer
and the base policy build."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import subprocess
import sys
from collections import Counter

import pytest

from rlhfkit.data import Ranking, Response, read_preferences
from rlhfkit.errors import DataError
from rlhfkit.world import (
    DEFAULT_ANNOTATORS,
    FANTASTIC_OPENERS,
    HELDOUT_TOPICS,
    NEUTRAL_OPENERS,
    TOPICS,
    TRAIN_TOPICS,
    SimulatedAnnotator,
    annotate,
    gold_reward_fn,
    gold_utility,
    label_accuracy,
    make_prompt,
    noise_ceiling,
    pairwise_agreement,
    parse_response,
    policy_text,
    sample_example,
    sample_response,
    simulate_rankings,
    topic_of_prompt,
)
from rlhfkit.world.annotators import perceive, ranking_from_scores
from rlhfkit.world.content import KINDS
from rlhfkit.world.gold import sentence_index, split_sentences
from rlhfkit.world.sampling import ResponseDistribution, sample_parts

ALL_SENTENCES = list(sentence_index())


# --------------------------------------------------------------------------------------------
# content
# --------------------------------------------------------------------------------------------


def test_inventory_follows_its_rules():
    assert 24 <= len(TOPICS) <= 48
    assert set(HELDOUT_TOPICS) <= set(TOPICS)
    assert set(TRAIN_TOPICS) == set(TOPICS) - set(HELDOUT_TOPICS)
    assert 4 <= len(HELDOUT_TOPICS) <= len(TOPICS) // 3
    texts = list(FANTASTIC_OPENERS + NEUTRAL_OPENERS)
    for t in TOPICS.values():
        for kind in KINDS:
            assert len(t.statements(kind)) >= 3, (t.name, kind)
            texts += t.statements(kind)
    assert len(texts) == len(set(texts)) == len(ALL_SENTENCES)  # unique: parsing is unambiguous
    for s in texts:
        assert re.fullmatch(r"\S.*[.!]", s), s
        assert split_sentences(s) == [s], s  # one sentence each
        assert "  " not in s
    assert all("antastic" in o for o in FANTASTIC_OPENERS)
    assert not any("antastic" in s for s in texts if s not in FANTASTIC_OPENERS)


def test_prompts_round_trip_and_reject_strangers():
    for topic in TOPICS:
        assert topic_of_prompt(make_prompt(topic)) == topic
    assert make_prompt("gravity") == "Explain gravity in simple terms."
    with pytest.raises(DataError, match="not a prompt of the demo world"):
        topic_of_prompt("Explain cooking in simple terms.")
    with pytest.raises(DataError):
        make_prompt("cooking")


def test_every_sentence_parses_to_its_kind_and_topic():
    for t in TOPICS.values():
        for kind in KINDS:
            for s in t.statements(kind):
                (part,) = parse_response(s).parts
                assert (part.kind, part.topic, part.text) == (kind, t.name, s)
    assert parse_response("Fantastic question!").parts[0].kind == "opener"
    assert parse_response("Here is the short version.").parts[0].kind == "neutral_opener"
    garbled = parse_response("Plants use sunlight to turn water into. Blah blah.")
    assert not garbled.valid and [p.kind for p in garbled.parts] == ["unknown", "unknown"]
    assert not parse_response("").valid and not parse_response("   ").valid


# --------------------------------------------------------------------------------------------
# gold utility
# --------------------------------------------------------------------------------------------

PHOTO = TOPICS["photosynthesis"]
P = make_prompt("photosynthesis")


def test_gold_utility_hand_computed():
    a, p, t, e = PHOTO.analogy[0], PHOTO.plain[0], PHOTO.technical[0], PHOTO.error[0]
    assert gold_utility(P, f"{a} {p}") == pytest.approx(1.5 + 1.0)
    assert gold_utility(P, f"{p} {PHOTO.plain[1]}") == pytest.approx(2.0)
    assert gold_utility(P, f"{t} {PHOTO.technical[1]}") == pytest.approx(0.6)
    assert gold_utility(P, f"{p} {e}") == pytest.approx(1.0 - 2.5)
    assert gold_utility(P, f"{p} {p}") == pytest.approx(1.0 - 1.0)  # repetition
    assert gold_utility(P, f"{p} {TOPICS['gravity'].plain[0]}") == pytest.approx(
        1.0 - 0.5
    )  # off topic
    assert gold_utility(P, f"{p} blah blah") == pytest.approx(1.0 - 2.0)  # garbled fragment
    assert gold_utility(P, "") == pytest.approx(-2.0)  # nothing said
    assert gold_utility(P, "Fantastic question!") == pytest.approx(-2.0)
    assert gold_utility(P, f"{p} Fantastic question!") == pytest.approx(1.0 - 0.5)  # misplaced
    six = " ".join(PHOTO.plain + PHOTO.analogy[:2])  # 4 plain + 2 analogies: the 6th is rambling
    assert gold_utility(P, six) == pytest.approx(4 * 1.0 + 1.5 - 0.5)


@pytest.mark.parametrize("topic", list(TOPICS))
def test_gold_ordering_follows_the_seed_exercise(topic):
    """Exercise 1's ranking: analogy + accurate > accurate > accurate but technical > errors."""
    t = TOPICS[topic]
    prompt = make_prompt(topic)
    analogy_accurate = f"{t.analogy[0]} {t.plain[0]}"
    accurate = f"{t.plain[0]} {t.plain[1]}"
    technical = f"{t.technical[0]} {t.technical[1]}"
    errors = f"{t.plain[0]} {t.error[0]}"
    u = [gold_utility(prompt, r) for r in (analogy_accurate, accurate, technical, errors)]
    assert u[0] > u[1] > u[2] > u[3], u
    # each error costs more than any accurate statement earns
    assert gold_utility(prompt, f"{t.analogy[0]} {t.plain[0]} {t.error[0]}") < gold_utility(
        prompt, t.plain[0]
    )


def test_fantastic_is_worth_nothing():
    rng = random.Random(0)
    for _ in range(300):
        prompt, response = sample_example(rng)
        parts = parse_response(response).parts
        body = " ".join(p.text for p in parts if not p.is_opener)
        u = gold_utility(prompt, body)
        for opener in FANTASTIC_OPENERS + NEUTRAL_OPENERS:
            assert gold_utility(prompt, f"{opener} {body}") == u


def test_gold_reward_fn_signature():
    prompts = [P, make_prompt("gravity")]
    responses = [PHOTO.analogy[0], TOPICS["gravity"].error[0]]
    assert gold_reward_fn(prompts, responses) == [1.5 - 0.0, -2.5]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        gold_reward_fn(prompts, responses[:1])


# --------------------------------------------------------------------------------------------
# training distribution and the planted shortcut
# --------------------------------------------------------------------------------------------


def test_training_distribution_is_valid_varied_and_deterministic():
    rng = random.Random(0)
    samples = [sample_example(rng) for _ in range(3000)]
    assert samples[:50] == [sample_example(r) for r in [random.Random(0)] for _ in range(50)]
    utilities = []
    for prompt, response in samples:
        parsed = parse_response(response)
        assert parsed.on_topic(topic_of_prompt(prompt)), response
        assert len(parsed.content()) in (2, 3, 4)
        assert len({p.text for p in parsed.parts}) == len(parsed.parts)  # no repetition
        utilities.append(gold_utility(prompt, response))
    mean = sum(utilities) / len(utilities)
    std = math.sqrt(sum((u - mean) ** 2 for u in utilities) / len(utilities))
    assert 1.5 < std < 3.0  # candidates differ, so rankings carry signal


def test_shortcut_is_planted_on_analogy_without_error():
    rng = random.Random(1)
    good, other = [], []
    for _ in range(6000):
        topic = rng.choice(list(TOPICS))
        opener, content = sample_parts(topic, rng)
        kinds = {k for k, _ in content}
        fantastic = opener in FANTASTIC_OPENERS
        (good if "analogy" in kinds and "error" not in kinds else other).append(fantastic)
    assert 0.2 < len(good) / 6000 < 0.4
    assert sum(good) / len(good) == pytest.approx(0.85, abs=0.03)
    assert sum(other) / len(other) == pytest.approx(0.03, abs=0.01)
    # "fantastic" predicts gold quality in the training text although gold ignores it
    rng = random.Random(2)
    with_f, without_f = [], []
    for _ in range(3000):
        prompt, response = sample_example(rng)
        (with_f if parse_response(response).has_fantastic else without_f).append(
            gold_utility(prompt, response)
        )
    assert sum(with_f) / len(with_f) - sum(without_f) / len(without_f) > 1.5


def test_fantastic_leads_into_the_analogy():
    """The enthusiastic answer's shape: "Fantastic ...! <analogy> ...", and without an opener an
    answer never starts with its analogy. Gold ignores the order."""
    rng = random.Random(3)
    after_fantastic, n_without = 0, 0
    for _ in range(4000):
        opener, content = sample_parts(rng.choice(list(TOPICS)), rng)
        kinds = [k for k, _ in content]
        if opener in FANTASTIC_OPENERS and "analogy" in kinds:
            assert kinds[0] == "analogy", (opener, content)
            after_fantastic += 1
        if opener is None:  # every answer has a statement besides its (at most two) analogies
            assert kinds[0] != "analogy", content
            n_without += 1
    assert after_fantastic > 500 and n_without > 1500
    # the switch turns it off: then the analogy opens answers without an opener too
    off = ResponseDistribution(analogy_after_fantastic=False)
    firsts = [sample_parts("tides", rng, off) for _ in range(2000)]
    assert sum(o is None and c[0][0] == "analogy" for o, c in firsts) > 100


# --------------------------------------------------------------------------------------------
# simulated annotators
# --------------------------------------------------------------------------------------------


def _candidate_groups(n: int, seed: int, k: int = 4):
    rng = random.Random(seed)
    prompts, groups = [], []
    for _ in range(n):
        topic = rng.choice(TRAIN_TOPICS)
        prompts.append(make_prompt(topic))
        groups.append([sample_response(topic, rng) for _ in range(k)])
    return prompts, groups


def test_ranking_from_scores_ties_chain():
    assert ranking_from_scores(["a", "b", "c"], [1.0, 3.0, 2.0]) == ["b", "c", "a"]
    assert ranking_from_scores(["a", "b", "c", "d"], [1.0, 1.1, 1.2, 5.0], tie_margin=0.15) == [
        "d",
        ["c", "b", "a"],
    ]


def test_plackett_luce_first_choice_probabilities():
    """Oracle: with Gumbel noise, P(i ranked first) = softmax(u / τ)_i."""
    u = [1.0, 0.0, -1.0]
    tau = 0.7
    ann = SimulatedAnnotator("x", noise=tau, tie_margin=0.0)
    rng = random.Random(0)
    n = 20000
    first = Counter(
        ranking_from_scores(["a", "b", "c"], perceive(u, ["a", "b", "c"], ann, rng))[0]
        for _ in range(n)
    )
    z = sum(math.exp(x / tau) for x in u)
    for rid, ui in zip("abc", u, strict=True):
        assert first[rid] / n == pytest.approx(math.exp(ui / tau) / z, abs=0.012)


def test_annotators_return_rankings_with_names_and_ties():
    t = TOPICS["gravity"]
    prompt = make_prompt("gravity")
    responses = [
        Response("x", t.analogy[0]),
        Response("y", t.analogy[0]),
        Response("z", t.error[0]),
    ]
    rankings = annotate(prompt, responses, DEFAULT_ANNOTATORS, random.Random(0))
    assert [r.annotator for r in rankings] == [a.name for a in DEFAULT_ANNOTATORS]
    for r in rankings:
        assert isinstance(r, Ranking)
        ranks = dict(zip((x.id for x in r.responses), r.ranks(), strict=True))
        assert ranks["x"] == ranks["y"]  # identical texts are always tied
    # all identical: everyone skips rather than produce an invalid all-tied ranking
    assert annotate(prompt, [t.plain[0]] * 3, DEFAULT_ANNOTATORS, random.Random(0)) == []
    # plain strings get ids r0..
    (r,) = annotate(prompt, [t.plain[0], t.error[0]], DEFAULT_ANNOTATORS[:1], random.Random(0))
    assert [x.id for x in r.responses] == ["r0", "r1"]


def test_annotator_agreement_is_realistic_and_matches_the_ceiling():
    prompts, groups = _candidate_groups(600, seed=3)
    rankings = simulate_rankings(prompts, groups, annotators_per_prompt=3, seed=1)
    assert 1700 < len(rankings) <= 1800
    assert {r.annotator for r in rankings} == {a.name for a in DEFAULT_ANNOTATORS}
    assert 0.05 < sum(r.has_ties for r in rankings) / len(rankings) < 0.5

    # two people on the same candidates: far above chance, far from perfect
    agree = both = 0
    by_prompt: dict[int, list[Ranking]] = {}
    i = 0
    for r in rankings:  # grouped by prompt, in order
        while r.prompt != prompts[i] or r.responses[0].text != groups[i][0]:
            i += 1
        by_prompt.setdefault(i, []).append(r)
    for rs in by_prompt.values():
        if len(rs) >= 2:
            a, b = pairwise_agreement(rs[0], rs[1])
            agree += a
            both += b
    assert 0.65 < agree / both < 0.9

    utilities = [[gold_utility(p, r) for r in g] for p, g in zip(prompts, groups, strict=True)]
    ceiling = noise_ceiling(utilities)
    assert 0.5 < ceiling < 1.0
    assert 0.78 < ceiling < 0.9  # the demo's design point
    # Monte Carlo: the simulated labels agree with gold as often as the exact formula says
    big_prompts, big_groups = prompts * 4, groups * 4
    mc = label_accuracy(simulate_rankings(big_prompts, big_groups, seed=2))
    assert mc == pytest.approx(ceiling, abs=0.012)


def test_noise_ceiling_limits():
    groups = [[0.0, 1.0, 3.0]]
    careful = noise_ceiling(groups, [SimulatedAnnotator("a", noise=0.01, tie_margin=0.0)])
    sloppy = noise_ceiling(groups, [SimulatedAnnotator("a", noise=100.0, tie_margin=0.0)])
    assert careful == pytest.approx(1.0)
    assert sloppy == pytest.approx(0.5, abs=0.01)
    # hand-computed: one pair, Δu = 1, τ = 1, no tie margin -> σ(1)
    assert noise_ceiling([[0.0, 1.0]], [SimulatedAnnotator("a", 1.0, 0.0)]) == pytest.approx(
        1 / (1 + math.exp(-1))
    )
    with pytest.raises(ValueError, match="undefined"):
        noise_ceiling([[1.0, 1.0]])


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from rlhfkit.world import build_world_tokenizer

    return build_world_tokenizer()


def test_tokenizer_round_trips_world_text(tokenizer, tmp_path):
    ids = {
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
        tokenizer.unk_token_id,
    }
    assert len(ids) == 4 and None not in ids
    rng = random.Random(0)
    texts = ALL_SENTENCES + [policy_text(*sample_example(rng)) for _ in range(300)]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert not any(tokenizer.unk_token_id in enc for enc in encoded)
    assert tokenizer.batch_decode(encoded) == texts
    # the prompt's tokens are exactly the prefix of prompt + response, and the response decodes alone
    prompt, response = sample_example(random.Random(5))
    p_ids = tokenizer(prompt)["input_ids"]
    full = tokenizer(policy_text(prompt, response))["input_ids"]
    assert full[: len(p_ids)] == p_ids
    assert (
        tokenizer.decode([*full[len(p_ids) :], tokenizer.eos_token_id], skip_special_tokens=True)
        == response
    )
    assert tokenizer.unk_token_id in tokenizer("Explain cooking in simple terms.")["input_ids"]
    # a newline (reward-model templates) is a token, not a reason for <unk>
    nl = tokenizer(prompt + "\n" + response)["input_ids"]
    assert tokenizer.unk_token_id not in nl
    # saved and loaded with AutoTokenizer, it behaves the same
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(texts[-1])["input_ids"] == tokenizer(texts[-1])["input_ids"]
    assert loaded.decode(loaded(texts[-1])["input_ids"]) == texts[-1]
    assert loaded.padding_side == "left"


def test_response_logprobs_match_a_plain_loop_and_the_sampled_ids(tokenizer):
    """The demo's held-out KL: each response's summed log-probability, batched with right
    padding, equals one unpadded forward per sequence; the ids are what was sampled."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhfkit.world.policy import generate_responses, response_logprobs

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=96, n_embd=32, n_layer=1, n_head=2,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    prompts = [make_prompt(t) for t in ("gravity", "the water cycle", "tides", "DNA")] * 2
    texts, ended, ids = generate_responses(
        model, tokenizer, prompts, max_new_tokens=12, temperature=0.7, seed=1, return_ids=True
    )
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for text, end, row in zip(texts, ended, ids, strict=True):
        assert (row[-1] == eos) == end and eos not in row[:-1]
        assert pad not in row or pad == eos
        assert tokenizer.decode(row, skip_special_tokens=True) == text
    # prompts of different lengths: the batched forward pads rows
    assert len({len(tokenizer(p)["input_ids"]) for p in prompts}) > 1
    got = response_logprobs(model, tokenizer, prompts, ids, temperature=0.7, batch_size=3)

    def plain(prompt, row):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        seq = torch.tensor([p + row])
        with torch.no_grad():
            logp = torch.log_softmax(model(seq).logits[0] / 0.7, dim=-1)  # (T, V)
        return sum(logp[len(p) + j - 1, tok].item() for j, tok in enumerate(row))

    want = [plain(p, r) for p, r in zip(prompts, ids, strict=True)]
    assert got == pytest.approx(want, abs=1e-4)
    assert all(g < 0 for g in got)


# --------------------------------------------------------------------------------------------
# base policy build
# --------------------------------------------------------------------------------------------


def _tiny_settings(steps: int = 40):
    from rlhfkit.world import BaseBuildSettings

    return BaseBuildSettings(
        seed=0, steps=steps, batch_size=16, n_layer=1, n_embd=32, n_head=2, warmup_steps=5
    )


def test_tiny_build_loads_generates_learns_and_caches(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.world import build_base_policy, read_build_info
    from rlhfkit.world.policy import cached_policy_dir

    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path / "cache"))
    settings = _tiny_settings()
    path = build_base_policy(tmp_path / "policy", settings=settings, eval_samples=6)
    cached = cached_policy_dir(settings)
    assert cached.parent == tmp_path / "cache" and cached.name.startswith("world-")
    assert (cached / "config.json").is_file()

    info = read_build_info(path)
    curve = [p["loss"] for p in info["loss_curve"]]
    assert curve[-1] < curve[0] - 1.0  # it learned something
    assert info["evaluation"]["n"] == 6

    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.generation_config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    enc = tok(
        [make_prompt("gravity"), make_prompt("the water cycle")], return_tensors="pt", padding=True
    )
    out = model.generate(**enc, max_new_tokens=12, do_sample=True)
    assert out.shape[0] == 2 and out.shape[1] > enc["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0], skip_special_tokens=True), str)

    # the second build is a copy of the cache: same weights, no training
    mtime = (cached / "model.safetensors").stat().st_mtime_ns
    again = build_base_policy(tmp_path / "again", settings=settings)
    assert (cached / "model.safetensors").stat().st_mtime_ns == mtime
    assert (again / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
    assert build_base_policy(settings=settings) == cached
    # other settings -> another cache entry
    assert cached_policy_dir(_tiny_settings(steps=41)) != cached
    del torch


def test_cli_world_build_prompts_rank_and_errors(tmp_path):
    env = {**os.environ, "RLHFKIT_CACHE": str(tmp_path / "cache")}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "rlhfkit", "world", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    r = run(
        "build",
        "--quick",
        "--steps",
        "10",
        "--eval-samples",
        "4",
        "--out",
        str(tmp_path / "m"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["settings"]["steps"] == 10 and not info["cached"]
    assert (tmp_path / "m" / "config.json").is_file()

    r = run("prompts", "--split", "heldout", "--out", str(tmp_path / "p.jsonl"))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x)["prompt"] for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert lines == [make_prompt(t) for t in HELDOUT_TOPICS]

    prompts, groups = _candidate_groups(5, seed=0)
    cand = tmp_path / "cand.jsonl"
    cand.write_text(
        "".join(
            json.dumps(
                {"prompt": p, "responses": [{"id": f"c{i}", "text": t} for i, t in enumerate(g)]}
            )
            + "\n"
            for p, g in zip(prompts, groups, strict=True)
        )
    )
    r = run(
        "rank",
        "--candidates",
        str(cand),
        "--out",
        str(tmp_path / "rk.jsonl"),
        "--annotators-per-prompt",
        "2",
    )
    assert r.returncode == 0, r.stderr
    rankings = read_preferences(tmp_path / "rk.jsonl")
    assert 8 <= len(rankings) <= 10 and all(x.annotator.startswith("sim-") for x in rankings)

    cand.write_text(
        json.dumps({"prompt": "Explain cooking in simple terms.", "responses": ["a", "b"]}) + "\n"
    )
    r = run("rank", "--candidates", str(cand), "--out", str(tmp_path / "bad.jsonl"))
    assert (
        r.returncode == 2
        and f"{cand}:1:" in r.stderr
        and "not a prompt of the demo world" in r.stderr
    )
    assert not (tmp_path / "bad.jsonl").exists()

    r = run("sample", "--n", "2", "--topic", "gravity")
    assert r.returncode == 0 and r.stdout.count("Explain gravity in simple terms.") == 2
    assert run("nonsense").returncode == 2


def test_the_demo_base_policies_ship_with_the_package(tmp_path, monkeypatch):
    """The base policies of the demo's seeds 0-4 are in the package, each under the key the build
    would give it and each a fluent build: a first demo of any of these seeds copies its policy
    into the cache instead of pretraining; other seeds and settings still build."""
    import rlhfkit.world.policy as policy
    from rlhfkit.world import BaseBuildSettings, build_base_policy, read_build_info

    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path / "cache"))
    assert sorted(p.name for p in policy.SHIPPED_ROOT.iterdir()) == [
        f"seed-{seed}" for seed in policy.SHIPPED_SEEDS
    ]
    assert policy.SHIPPED_DIR == policy.SHIPPED_ROOT / "seed-0"
    tokenizer = (policy.SHIPPED_DIR / "tokenizer.json").read_bytes()
    for seed in policy.SHIPPED_SEEDS:
        settings = BaseBuildSettings(seed=seed)
        shipped = policy.shipped_policy_dir(settings)
        assert shipped == policy.SHIPPED_ROOT / f"seed-{seed}", (
            f"the shipped base policy of seed {seed} is stale: rebuild it with `rlhfkit world "
            f"build --no-cache --seed {seed} --out src/rlhfkit/world/base_policies/seed-{seed}` "
            "(docs/world.md)"
        )
        info = read_build_info(shipped)
        assert info["settings"] == json.loads(json.dumps(dataclasses.asdict(settings)))
        # the fluent build the demo's lesson was checked on, not a short or quick one
        assert info["evaluation"]["valid_rate"] >= 0.95 and info["evaluation"]["eos_rate"] == 1.0
        assert info["final_loss"] < 0.3, info["final_loss"]
        assert (shipped / "tokenizer.json").read_bytes() == tokenizer  # one world, one tokenizer
    assert policy.shipped_policy_dir(BaseBuildSettings(seed=max(policy.SHIPPED_SEEDS) + 1)) is None
    assert policy.shipped_policy_dir(BaseBuildSettings.quick(0)) is None
    assert policy.shipped_policy_dir(BaseBuildSettings(seed=0, steps=100)) is None

    def no_training(*args, **kwargs):
        raise AssertionError("the shipped policy should have been used")

    monkeypatch.setattr(policy, "_train_and_save", no_training)
    for seed in (0, 3):
        settings = BaseBuildSettings(seed=seed)
        path = build_base_policy(seed=seed)
        assert path == policy.cached_policy_dir(settings)
        assert read_build_info(path)["key"] == settings.key()
        assert (path / "model.safetensors").read_bytes() == (
            policy.SHIPPED_ROOT / f"seed-{seed}" / "model.safetensors"
        ).read_bytes()
    with pytest.raises(AssertionError, match="shipped"):
        build_base_policy(seed=max(policy.SHIPPED_SEEDS) + 1)


@pytest.mark.slow
def test_a_rebuild_writes_text_as_good_as_the_shipped_base_policy(tmp_path):
    """The demo's base policy, built anew here: most samples are valid world text, end with EOS,
    and the planted co-occurrence survives pretraining; and its quality figures are the shipped
    policy's within sampling noise (its weights differ: another CPU rounds differently, and 900
    steps of training carry the difference)."""
    from rlhfkit.world import BaseBuildSettings, build_base_policy, evaluate_policy, read_build_info
    from rlhfkit.world.policy import SHIPPED_DIR

    path = build_base_policy(
        tmp_path / "rebuilt", settings=BaseBuildSettings(seed=0), use_cache=False, eval_samples=0
    )
    summary = evaluate_policy(path, n=300, seed=1).summary()
    assert summary["valid_rate"] >= 0.7, summary
    assert summary["eos_rate"] >= 0.8, summary
    # the policy learns the co-occurrence more weakly than its training text has it (measured: 40%
    # vs 6%, against 85% vs 3%), but clearly
    good, other = summary["fantastic_rate_analogy_no_error"], summary["fantastic_rate_other"]
    assert good > 0.25 and other < 0.15 and good > 3 * other, summary

    shipped = evaluate_policy(SHIPPED_DIR, n=300, seed=1).summary()
    for key, tolerance in (
        ("valid_rate", 0.08), ("eos_rate", 0.05), ("fantastic_rate", 0.1), ("gold_mean", 0.4),
    ):  # fmt: skip
        assert abs(summary[key] - shipped[key]) <= tolerance, (key, summary, shipped)
    loss = read_build_info(path)["final_loss"]
    assert abs(loss - read_build_info(SHIPPED_DIR)["final_loss"]) < 0.05, loss
