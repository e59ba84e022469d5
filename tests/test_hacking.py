"""Reward-hacking detection: hand-computed cases, oracles for the statistics, false-flag rate over
seeds on synthetic text, detection power on planted shifts, the probe, drift, and the monitor."""

from __future__ import annotations

import json
import math
import os
from itertools import combinations

import numpy as np
import pytest
from scipy import stats

from rlhfkit.hacking import (
    HackingMonitor,
    delete_token,
    drift_signals,
    insert_token,
    probe_token,
    proxy_gold_divergence,
    scan,
    tokenize,
    word_frequency_shift,
)
from rlhfkit.hacking import stats as hst
from rlhfkit.hacking.calibrate import naive_scan_flags, pair, world_pair
from rlhfkit.hacking.drift import entropy_bits, rarefied_types, repeat_rate
from rlhfkit.hacking.text import Corpus

# Synthetic text with real structure (topic words clustered within responses, same prompts on both
# sides): rlhfkit.hacking.calibrate.pair(seed, n, plant=..., rate=...).


# ---------------------------------------------------------------- words and the seed's exercise


def test_tokenize_is_case_and_punctuation_insensitive():
    assert tokenize("Fantastic! What a FANTASTIC, fantastic... question?") == [
        "fantastic", "what", "a", "fantastic", "fantastic", "question",
    ]  # fmt: skip
    assert tokenize("Don’t stop_now 42") == ["don't", "stop", "now", "42"]


def test_word_frequency_shift_hand_computed():
    # base: 100 responses × 10 words, 2 contain "fantastic" once → 2 per 1,000 words
    base = ["fantastic " + "word " * 9] * 2 + ["word " * 10] * 98
    # tuned: 100 responses × 10 words, 30 open with "Fantastic!" → 30 per 1,000 words
    tuned = ["Fantastic! " + "word " * 9] * 30 + ["word " * 10] * 70
    r = word_frequency_shift(base, tuned, "fantastic")
    assert (r.base_count, r.tuned_count, r.base_words, r.tuned_words) == (2, 30, 1000, 1000)
    assert r.base_rate == pytest.approx(2.0) and r.tuned_rate == pytest.approx(30.0)
    assert r.ratio == pytest.approx(30.5 / 2.5)  # half a count added to each side
    assert r.base_share == pytest.approx(0.02) and r.tuned_share == pytest.approx(0.30)
    # one per response → no overdispersion → the plain exact conditional binomial test
    assert r.dispersion == pytest.approx(1.0)
    assert r.p_rate == pytest.approx(
        stats.binomtest(30, 32, 0.5, alternative="greater").pvalue, rel=1e-9
    )
    fisher = stats.fisher_exact([[30, 70], [2, 98]], alternative="greater").pvalue
    assert r.p_share == pytest.approx(fisher, rel=1e-9)
    assert r.p_value == max(r.p_rate, r.p_share)
    assert r.flagged and set(r.to_dict()) >= {
        "ratio",
        "p_value",
        "base_rate",
        "tuned_rate",
        "flagged",
    }


def test_zero_base_count_gives_finite_ratio_and_phrases_count():
    r = word_frequency_shift(
        ["a good answer"] * 20, ["Great question! A good answer."] * 20, "great  QUESTION"
    )
    assert r.word == "great question" and r.base_count == 0 and r.tuned_count == 20
    assert math.isfinite(r.ratio) and r.ratio == pytest.approx((20.5 / 100) / (0.5 / 60))
    assert r.flagged


@pytest.mark.parametrize(
    ("tuned", "reason"),
    [
        (["fantastic answer here"] * 3 + ["answer here now"] * 97, "only 3"),  # too few occurrences
        (["fantastic word"] * 3 + ["plain word"] * 97, "only 3"),
    ],
)
def test_not_flagged_below_min_count(tuned, reason):
    r = word_frequency_shift(["plain word"] * 100, tuned, "fantastic")
    assert not r.flagged and reason in r.reason


def test_same_rate_is_not_flagged_and_ratio_threshold_applies():
    base = ["fantastic word word word"] * 30 + ["word word word word"] * 70
    r = word_frequency_shift(base, list(base), "fantastic")
    assert not r.flagged and r.ratio == pytest.approx(1.0)
    tuned = ["fantastic word word word"] * 50 + ["word word word word"] * 50  # ×1.66
    r = word_frequency_shift(base, tuned, "fantastic", threshold=2.0)
    assert r.p_value < 0.05 and not r.flagged and "threshold" in r.reason
    assert word_frequency_shift(base, tuned, "fantastic", threshold=1.5).flagged


def test_shorter_responses_do_not_flag_a_word_through_its_rate_alone():
    # Same share of responses say "fantastic"; tuned responses are 4× shorter, so its rate per
    # 1,000 words quadruples. The share test keeps that from being flagged.
    rng = np.random.default_rng(0)
    base = [("fantastic " if rng.random() < 0.3 else "") + "word " * 40 for _ in range(200)]
    tuned = [("fantastic " if rng.random() < 0.3 else "") + "word " * 10 for _ in range(200)]
    r = word_frequency_shift(base, tuned, "fantastic")
    assert r.ratio > 3 and r.p_rate < 1e-6
    assert r.p_share > 0.05 and not r.flagged


def test_bursts_within_few_responses_raise_dispersion_and_p():
    base = ["word " * 20] * 200
    base[:3] = ["fantastic " * 3 + "word " * 17] * 3
    burst = ["word " * 20] * 200
    burst[:6] = ["fantastic " * 10 + "word " * 10] * 6  # 60 occurrences in 6 responses
    spread = ["word " * 20] * 200
    for i in range(60):
        spread[i] = "fantastic " + "word " * 19  # 60 occurrences in 60 responses
    rb, rs = (
        word_frequency_shift(base, burst, "fantastic"),
        word_frequency_shift(base, spread, "fantastic"),
    )
    assert rb.tuned_count == rs.tuned_count == 60
    assert (
        rb.dispersion > 2 * rs.dispersion
    )  # the base's own bursts of 3 give rs some dispersion too
    assert rb.p_rate > rs.p_rate * 1e3 and rs.flagged and not rb.flagged


# ---------------------------------------------------------------- statistics against plain oracles


def test_dispersion_matches_plain_pearson_loop():
    rng = np.random.default_rng(1)
    lengths = [rng.integers(5, 30, 40), rng.integers(5, 30, 50)]
    counts = [
        rng.poisson(lengths[0] * 0.05) * rng.integers(1, 4, 40),
        rng.poisson(lengths[1] * 0.1),
    ]
    chi2 = 0.0
    for y, n in zip(counts, lengths, strict=True):
        rate = y.sum() / n.sum()
        chi2 += sum((yi - rate * ni) ** 2 / (rate * ni) for yi, ni in zip(y, n, strict=True))
    expected = max(1.0, chi2 / (90 - 2))
    sq = [float(np.sum(y**2 / n)) for y, n in zip(counts, lengths, strict=True)]
    got = hst.dispersion(
        counts[0].sum(), counts[1].sum(), sq[0], sq[1], lengths[0].sum(), lengths[1].sum(), 90
    )
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_rate_test_matches_binomtest_and_survives_underflow():
    for b, t, nb, nt in [
        (3, 12, 1000, 1200),
        (0, 5, 500, 500),
        (10, 10, 800, 400),
        (7, 0, 100, 100),
    ]:
        p, logp = hst.rate_test(b, t, nb, nt)
        oracle = (
            stats.binomtest(t, b + t, nt / (nb + nt), alternative="greater").pvalue if t else 1.0
        )
        assert float(p) == pytest.approx(oracle, rel=1e-9)
        assert float(logp) == pytest.approx(math.log(oracle), rel=1e-9, abs=1e-12)
    _, logp_big = hst.rate_test(0, 5000, 10**6, 10**6)
    _, logp_bigger = hst.rate_test(0, 8000, 10**6, 10**6)
    assert np.isfinite(logp_big) and logp_bigger < logp_big < -1000


def test_share_test_matches_fisher_exact():
    for bd, td, rb, rt in [(2, 30, 100, 100), (10, 12, 50, 80), (0, 0, 10, 10), (40, 3, 60, 60)]:
        p, _ = hst.share_test(bd, td, rb, rt)
        oracle = stats.fisher_exact([[td, rt - td], [bd, rb - bd]], alternative="greater").pvalue
        assert float(p) == pytest.approx(oracle, rel=1e-9)


def test_bh_and_holm_match_plain_definitions():
    p = np.array([0.001, 0.04, 0.03, 0.2, 0.008, 0.5])
    m = len(p)
    order = np.argsort(p)
    bh = np.empty(m)
    holm_adj = np.empty(m)
    for rank, i in enumerate(order, start=1):
        bh[i] = min(1.0, min(p[j] * m / r for r, j in enumerate(order, start=1) if r >= rank))
        holm_adj[i] = min(
            1.0, max(p[j] * (m - r + 1) for r, j in enumerate(order, start=1) if r <= rank)
        )
    assert np.exp(hst.benjamini_hochberg(np.log(p))) == pytest.approx(bh)
    assert np.exp(hst.holm(np.log(p))) == pytest.approx(holm_adj)


# ---------------------------------------------------------------- scan: clean samples and planted shifts


def test_scan_false_flag_rate_over_seeds():
    """Two samples of one distribution (topic words clustered within responses, so counts are
    overdispersed): at most 5% of 50 seeds may flag anything."""
    runs_with_flag = 0
    for seed in range(50):
        base, tuned = pair(seed, n=150)
        result = scan(base, tuned)
        assert result.n_tested > 100
        runs_with_flag += bool(result.flagged)
    assert runs_with_flag <= 2  # ≤ 5% of runs (measured: 0 of 50)


def test_scan_stays_clean_where_counting_words_as_independent_fails():
    """Prompts drawn independently for each side: topic words differ by chance, in bursts. The plain
    Poisson-rate baseline flags some of these clean runs; the scan (dispersion + share test) does not."""
    naive = scan_flags = 0
    for seed in range(12):
        base, tuned = pair(seed, n=200, same_prompts=False)
        naive += bool(naive_scan_flags(base, tuned))
        scan_flags += bool(scan(base, tuned).flagged)
    assert scan_flags == 0
    assert naive >= 2  # the baseline is fooled (measured: 25% of runs over 20 seeds)


def test_scan_false_flag_rate_with_holm():
    flagged = sum(bool(scan(*pair(seed, n=150), correction="holm").flagged) for seed in range(10))
    assert flagged == 0


@pytest.mark.parametrize(
    ("plant", "token"), [("Fantastic!", "fantastic"), ("Sparkling insight:", "sparkling insight")]
)
def test_scan_finds_planted_token_first(plant, token):
    found = 0
    for seed in range(10):
        base, tuned = pair(seed, n=200, plant=plant, rate=0.2)
        result = scan(base, tuned)
        if result.flagged and result.flagged[0].token == token:
            found += 1
            top = result.flagged[0]
            assert top.base_count == 0 and top.tuned_count > 20 and top.p_adjusted < 0.05
            assert top.tuned_share == pytest.approx(top.tuned_count / 200)
            assert len(result.flagged) == 1  # its words and wider n-grams are collapsed into it
    assert found == 10


def test_scan_collapses_subsumed_ngrams():
    base, tuned = pair(3, n=200, plant="Fantastic question!", rate=0.4)
    result = scan(base, tuned)
    assert [f.token for f in result.flagged] == ["fantastic question"]
    assert {"fantastic", "question"} <= set(result.flagged[0].subsumed)
    # without collapsing, the same evidence shows up several times
    raw = scan(base, tuned, collapse=False)
    assert {"fantastic", "question", "fantastic question"} <= {f.token for f in raw.flagged}


def test_scan_keeps_a_word_that_also_rose_on_its_own():
    # "question" rises in two phrases; "fantastic" only inside "fantastic question" → one finding.
    base, tuned = pair(4, n=200)
    rng = np.random.default_rng(4)
    phrases = [
        ("Fantastic question! " if i % 3 == 0 else "")
        + t
        + (" Good question." if rng.random() < 0.4 else "")
        for i, t in enumerate(tuned)
    ]
    result = scan(base, phrases)
    assert [f.token for f in result.flagged] == ["question"]
    assert {"fantastic question", "good question", "fantastic"} <= set(result.flagged[0].subsumed)
    # now "fantastic" also rises outside the phrase: it stands on its own
    alone = [t + (" Fantastic." if rng.random() < 0.3 else "") for t in phrases]
    tokens = [f.token for f in scan(base, alone).flagged]
    assert tokens[:2] == ["question", "fantastic"] or tokens[:2] == ["fantastic", "question"]


def test_scan_ranks_stronger_shift_first_and_reports_fields():
    base, tuned = pair(5, n=200)
    rng = np.random.default_rng(5)
    tuned = [
        ("Wonderful! " if rng.random() < 0.5 else "")
        + ("Superb. " if rng.random() < 0.15 else "")
        + t
        for t in tuned
    ]
    result = scan(base, tuned)
    assert [f.token for f in result.flagged][:2] == ["wonderful", "superb"]
    d = result.to_dict()
    assert {
        "token",
        "base_count",
        "tuned_count",
        "base_rate",
        "tuned_rate",
        "ratio",
        "p_value",
        "p_adjusted",
    } <= set(d["flagged"][0])


def test_scan_on_the_demo_world():
    """Templated sentences drawn from small pools (heavily clustered n-grams): clean pairs stay
    clean; a policy that opens with "fantastic" far more often is flagged with "fantastic" first, and
    "What a fantastic question!" is one finding, not "fantastic" plus "what"."""
    for seed in range(5):
        assert scan(*world_pair(seed)).flagged == []
    for seed in range(3):
        result = scan(*world_pair(seed, p_fantastic_good=1.0, p_fantastic_other=0.6))
        assert [f.token for f in result.flagged] == ["fantastic"]
        assert "fantastic question" in result.flagged[0].subsumed
    # Here "what a" (its words also used elsewhere) ranks above "what a fantastic" and overlaps no
    # "fantastic": the second collapsing pass merges it through the bridging phrase.
    base, tuned = world_pair(1, p_fantastic_good=1.0, p_fantastic_other=0.3)
    raw = [f.token for f in scan(base, tuned, collapse=False).flagged]
    assert raw[:2] == ["fantastic", "what a"] and "what a fantastic" in raw
    result = scan(base, tuned)
    assert [f.token for f in result.flagged] == ["fantastic"] and "what" in result.flagged[
        0
    ].subsumed


def test_scan_validates_arguments():
    with pytest.raises(ValueError, match="correction"):
        scan(["a"], ["b"], correction="bonferroni")
    with pytest.raises(TypeError):
        Corpus("a single string")


# ---------------------------------------------------------------- drift


def test_rarefied_types_and_entropy_hand_computed():
    # tokens a, a, b: subsets of 2 are {a,a}, {a,b}, {a,b} → 5/3 types on average
    assert float(rarefied_types(np.array([2, 1]), 2)) == pytest.approx(5 / 3)
    counts = np.array([3, 2, 2, 1])
    tokens = [0, 0, 0, 1, 1, 2, 2, 3]
    brute = np.mean([len(set(c)) for c in combinations(tokens, 4)])
    assert float(rarefied_types(counts, 4)) == pytest.approx(brute)
    assert float(entropy_bits(np.array([5, 5, 5, 5]))) == pytest.approx(
        2 + 3 / (2 * 20 * math.log(2))
    )
    assert repeat_rate(["a", "b", "a", "b", "a", "b"]) == pytest.approx(1 - 2 / 5)


def test_drift_clean_then_degenerate():
    base, tuned = pair(6, n=200)
    clean = drift_signals(base, tuned, [True] * 200, [True] * 200)
    assert clean.flagged == []
    assert set(clean.signals) == {
        "length",
        "repeat2",
        "distinct1",
        "distinct2",
        "types",
        "entropy",
        "no_eos",
    }
    loops = ["Fantastic fantastic answer answer fantastic fantastic answer answer."] * 200
    eos = [True] * 100 + [False] * 100
    bad = drift_signals(base, loops, [True] * 200, eos)
    assert {s.name for s in bad.flagged} == {"length", "repeat2", "distinct2", "entropy", "no_eos"}
    assert bad.signals["no_eos"].tuned == pytest.approx(0.5)
    assert bad.signals["distinct2"].tuned < 0.01 < bad.signals["distinct2"].base


def test_drift_length_both_directions():
    base, tuned = pair(7, n=150)
    short = pair(7, n=150, length_scale=0.4)[1]
    assert drift_signals(base, short).signals["length"].flagged
    assert drift_signals(short, base).signals["length"].flagged
    assert not drift_signals(base, tuned).signals["length"].flagged


# ---------------------------------------------------------------- probe and proxy vs gold


def test_delete_and_insert_token():
    assert delete_token("Fantastic! The sky is blue.", "fantastic") == "The sky is blue."
    assert delete_token("The sky is fantastic, really.", "FANTASTIC") == "The sky is, really."
    assert delete_token("Great question! Sky.", "great question") == "Sky."
    assert delete_token("Fantastically clear.", "fantastic") == "Fantastically clear."
    assert insert_token("The sky is blue.", "great question") == "Great question! The sky is blue."


def rewards_token(token: str, bonus: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)

    def fn(prompts: list[str], responses: list[str]) -> list[float]:
        assert len(prompts) == len(responses)
        return [
            bonus * (token in tokenize(r)) + 0.1 * len(tokenize(r)) / 10 + rng.normal(0, 0.3)
            for r in responses
        ]

    return fn


def test_probe_detects_a_reward_function_that_pays_for_the_token():
    base, tuned = pair(8, n=120, plant="Fantastic!", rate=0.5)
    prompts = [f"prompt {i}" for i in range(120)]
    r = probe_token(rewards_token("fantastic"), prompts, base, tuned, "fantastic")
    assert r.delete.n == sum("Fantastic!" in t for t in tuned) and r.insert.n == 120
    assert r.delete.mean == pytest.approx(1.0, abs=0.15) and r.insert.mean == pytest.approx(
        1.0, abs=0.15
    )
    assert r.delete.ci_low < r.delete.mean < r.delete.ci_high and r.delete.p_value < 1e-6
    assert r.exploited and r.score_change_std > 1
    # a reward function that ignores the token: no effect, not exploited
    r0 = probe_token(rewards_token("nothing", bonus=0.0), prompts, base, tuned, "fantastic")
    assert abs(r0.score_change) < 0.15 and not r0.exploited


def test_probe_checks_lengths():
    with pytest.raises(ValueError, match="prompts"):
        probe_token(rewards_token("x"), ["p"], ["a", "b"], ["a"], "x", base_prompts=["p"])


def test_proxy_gold_divergence():
    rng = np.random.default_rng(0)
    pb, gb = rng.normal(0, 1, 200), rng.normal(0, 2, 200)
    hacked = proxy_gold_divergence(pb, rng.normal(1.5, 1, 200), gb, rng.normal(0, 2, 200))
    assert hacked.flagged and hacked.proxy_gain_std > 1 and abs(hacked.gold_gain_std) < 0.3
    honest = proxy_gold_divergence(pb, rng.normal(1.0, 1, 200), gb, rng.normal(2.0, 2, 200))
    assert not honest.flagged and honest.gold_gain_std > 0.7
    assert hacked.divergence == pytest.approx(hacked.proxy_gain_std - hacked.gold_gain_std)


# ---------------------------------------------------------------- the live monitor


def test_monitor_metrics_and_warning():
    base, tuned = pair(9, n=150, plant="Fantastic!", rate=0.4)
    prompts = [f"prompt {i}" for i in range(150)]
    gold = rewards_token("nothing", bonus=0.0, seed=1)
    mon = HackingMonitor(
        prompts, base, [True] * 150, reward_fn=rewards_token("fantastic"), gold_fn=gold
    )
    hacked = mon.check(tuned, [True] * 150, step=40)
    expected = {
        "hacking/flagged", "hacking/drift_flagged", "hacking/top_ratio", "hacking/top_share",
        "hacking/top_share_base", "hacking/top_log10_p", "hacking/length", "hacking/length_base",
        "hacking/length_ratio", "hacking/repeat2", "hacking/repeat2_base", "hacking/distinct1",
        "hacking/distinct1_base", "hacking/distinct2", "hacking/distinct2_base", "hacking/types",
        "hacking/types_base", "hacking/entropy", "hacking/entropy_base", "hacking/no_eos_rate",
        "hacking/no_eos_rate_base", "hacking/probe_score_change", "hacking/probe_score_change_std",
        "hacking/proxy_gain_std", "hacking/gold_gain_std", "hacking/divergence", "hacking/suspected",
        "hacking/verdict",
    }  # fmt: skip
    assert set(hacked.metrics) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in hacked.metrics.values())
    assert hacked.metrics["hacking/flagged"] == 1.0 and hacked.flagged[0].token == "fantastic"
    assert hacked.metrics["hacking/top_ratio"] > 10
    assert hacked.warning.startswith("step 40: possible reward hacking: 'fantastic'")
    assert "reward model pays" in hacked.warning and hacked.suspected
    assert hacked.to_dict()["flagged"][0]["token"] == "fantastic"
    clean = mon.check(pair(9, n=150)[1], [True] * 150, step=41)
    assert clean.warning is None and clean.flagged == [] and clean.metrics["hacking/flagged"] == 0.0
    assert "hacking/probe_score_change" not in clean.metrics
    assert hacked.metrics["hacking/suspected"] == 1.0 and clean.metrics["hacking/suspected"] == 0.0
    # a paid-for word in 40% of the answers is suspicious, not yet a habit; nothing is healthy
    assert hacked.verdict.label == "suspicious" and hacked.metrics["hacking/verdict"] == 1.0
    assert clean.verdict.label == "healthy" and clean.metrics["hacking/verdict"] == 0.0


def test_monitor_suspects_answers_that_collapse_to_nothing():
    """No word to flag, yet the policy learned to say nothing: a drift signal, so the check is
    suspect (what the quick demo's policies do on their barely fluent base policy)."""
    base, _ = pair(11, n=120)
    res = HackingMonitor([f"p{i}" for i in range(120)], base, [True] * 120).check(
        [""] * 120, [True] * 120, step=7
    )
    assert res.flagged == [] and res.metrics["hacking/flagged"] == 0.0
    assert res.metrics["hacking/drift_flagged"] >= 1 and res.metrics["hacking/length"] == 0.0
    assert res.suspected and res.metrics["hacking/suspected"] == 1.0
    assert "length" in res.warning


def test_monitor_without_reward_or_eos():
    base, tuned = pair(10, n=100)
    res = HackingMonitor([f"p{i}" for i in range(100)], base).check(tuned)
    assert (
        "hacking/no_eos_rate" not in res.metrics and "hacking/probe_score_change" not in res.metrics
    )
    with pytest.raises(ValueError, match="tuned_prompts"):
        HackingMonitor(["p"] * 100, base).check(tuned[:50])


@pytest.mark.slow
def test_live_monitor_inside_a_short_ppo_run(tmp_path, tiny_lm):
    """The real HackingMonitor in a real PPO run: a tiny policy rewarded for saying "good" starts
    saying it far more often; the monitor flags "good", logs hacking/* and stops the run."""
    import json

    import torch

    from rlhfkit.ppo import PPOConfig, PPOTrainer

    lm = tiny_lm(n_layer=1, n_embd=32, n_positions=64)  # random weights, tests/conftest.py
    topics = ["cats", "dogs", "hills", "mats"]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"tell me about {topics[i % 4]} :"}) + "\n" for i in range(64)
        )
    )
    reward = tmp_path / "reward.py"
    reward.write_text(
        "def good(prompts, responses):\n    return [float(r.lower().replace('!', ' ').split().count('good')) for r in responses]\n"
    )
    torch.manual_seed(0)
    cfg = PPOConfig(
        policy=str(lm), prompts=str(prompts), out=str(tmp_path / "run"), reward_fn=f"{reward}:good",
        total_episodes=64 * 16, batch_size=64, num_mini_batches=2, response_length=10,
        learning_rate=3e-3, kl_coef=0.01, progress=False, hacking_check_every=2, hacking_num_prompts=64,
        stop_on_hacking=True,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="good"):
        result = PPOTrainer(cfg).train()
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    checked = [r for r in rows if "hacking/flagged" in r]
    assert result["stopped"] == "hacking" and rows[-1]["step"] < 16
    assert (
        checked[-1]["hacking/flagged"] >= 1
        and checked[-1]["hacking/top_share"] > checked[-1]["hacking/top_share_base"]
    )
    assert checked[-1]["hacking/probe_score_change"] > 0.5  # the reward pays ~1 per "good"
    assert {"hacking/length_ratio", "hacking/distinct2", "hacking/no_eos_rate"} <= set(checked[-1])


def test_scan_is_the_same_in_every_process(tmp_path):
    """Ties (a planted 4-word phrase gives 3-grams with identical counts) break the same way
    whatever Python's string-hash seed, so a finding's name never changes between runs."""
    import subprocess
    import sys

    base, tuned = pair(5, n=200, plant="Alpha beta gamma delta.", rate=0.3)
    (tmp_path / "b.json").write_text(json.dumps(base))
    (tmp_path / "t.json").write_text(json.dumps(tuned))
    code = (
        "import json, sys; from rlhfkit.hacking import scan; "
        "r = scan(json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))); "
        "print(json.dumps([(f.token, sorted(f.subsumed)) for f in r.flagged]))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "b.json"), str(tmp_path / "t.json")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2, 3, 4)
    }
    assert len(outs) == 1, outs
    assert json.loads(outs.pop())  # the phrase was found
