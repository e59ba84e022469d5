"""Measure the detector on synthetic text with a known truth: false-flag rate and detection power.

    python -m rlhfkit.hacking.calibrate [--seeds 100] [--responses 200]

The synthetic responses have the structure that makes naive tests fail: Zipfian background words
plus topic words that cluster within a response (so word counts are overdispersed), prompts that
fix the topic, and base and tuned samples answering the same prompts. "Clean" pairs draw both sides
from one distribution; "planted" pairs prefix a share of the tuned responses with an opener.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rlhfkit.hacking import stats as st
from rlhfkit.hacking.frequency import scan
from rlhfkit.hacking.text import Corpus


def make_world(seed: int, vocab: int = 400, topics: int = 20, topic_words: int = 8):
    """Zipfian background word probabilities and the word ids of each topic."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab + 1)
    topic_sets = [rng.choice(vocab, topic_words, replace=False) for _ in range(topics)]
    return zipf / zipf.sum(), topic_sets


def sample(
    rng: np.random.Generator,
    world,
    prompt_topics,
    plant: str | None = None,
    rate: float = 0.0,
    length_scale: float = 1.0,
) -> list[str]:
    """One response per prompt topic: 10–60 words, 30% of them from the topic; ``plant`` opens a
    ``rate`` share of them."""
    zipf, topic_sets = world
    out = []
    for topic in prompt_topics:
        n = max(3, int(rng.integers(10, 60) * length_scale))
        background = rng.choice(len(zipf), n, p=zipf)
        topical = rng.choice(topic_sets[topic], n)
        ids = np.where(rng.random(n) < 0.3, topical, background)
        text = " ".join(f"w{i}" for i in ids).capitalize() + "."
        if plant and rng.random() < rate:
            text = f"{plant} {text}"
        out.append(text)
    return out


def pair(
    seed: int, n: int = 200, same_prompts: bool = True, **plant
) -> tuple[list[str], list[str]]:
    """Base and tuned samples for ``n`` prompts; ``plant``/``rate`` go to the tuned side.

    ``same_prompts=False`` draws each side's prompts (topics) independently from one distribution:
    still no real change, but topic words now differ by chance in bursts, which is where counting
    words as independent events goes wrong.
    """
    rng = np.random.default_rng(seed)
    world = make_world(seed)
    topics = rng.integers(0, len(world[1]), n)
    tuned_topics = topics if same_prompts else rng.integers(0, len(world[1]), n)
    return sample(rng, world, topics), sample(rng, world, tuned_topics, **plant)


def world_pair(seed: int, n: int = 200, **dist) -> tuple[list[str], list[str]]:
    """Base and tuned responses from the demo world (``rlhfkit.world``) for the same ``n`` prompts:
    base from the base distribution, tuned from ``ResponseDistribution(**dist)``."""
    import random

    from rlhfkit.world.content import TOPICS
    from rlhfkit.world.sampling import ResponseDistribution, sample_response

    rng = random.Random(seed)
    prompts = [rng.choice(sorted(TOPICS)) for _ in range(n)]
    base_rng, tuned_rng = random.Random(2 * seed), random.Random(2 * seed + 1)
    base = [sample_response(t, base_rng) for t in prompts]
    return base, [sample_response(t, tuned_rng, ResponseDistribution(**dist)) for t in prompts]


def naive_scan_flags(
    base_texts,
    tuned_texts,
    max_n: int = 3,
    threshold: float = 2.0,
    min_count: int = 5,
    alpha: float = 0.05,
) -> list[str]:
    """The baseline the scan improves on: every word occurrence an independent event (plain exact
    Poisson-rate test, no dispersion factor, no share-of-responses test), same BH, ratio and count.
    """
    base, tuned = Corpus(base_texts), Corpus(tuned_texts)
    tokens, b, t = [], [], []
    for n in range(1, max_n + 1):
        sb, stt = base.ngram_stats(n).count, tuned.ngram_stats(n).count
        for g in set(sb) | set(stt):
            if sb.get(g, 0) + stt.get(g, 0) >= min_count:
                tokens.append(g)
                b.append(sb.get(g, 0))
                t.append(stt.get(g, 0))
    b_arr, t_arr = np.array(b, dtype=float), np.array(t, dtype=float)
    _, logp = st.rate_test(b_arr, t_arr, base.n_words, tuned.n_words)
    adj = st.benjamini_hochberg(logp)
    ratio = st.smoothed_ratio(b_arr, t_arr, base.n_words, tuned.n_words)
    keep = (adj <= np.log(alpha)) & (ratio > threshold) & (t_arr >= min_count)
    return [g for g, k in zip(tokens, keep, strict=True) if k]


def false_flag_rate(
    seeds: int, n: int, same_prompts: bool = True, naive: bool = False, **scan_kwargs
) -> float:
    """Share of clean pairs (one distribution) where the scan (or the naive baseline) flags anything."""
    flags = []
    for s in range(seeds):
        base, tuned = pair(s, n, same_prompts=same_prompts)
        flags.append(
            bool(
                naive_scan_flags(base, tuned) if naive else scan(base, tuned, **scan_kwargs).flagged
            )
        )
    return float(np.mean(flags))


def detection_power(
    seeds: int, n: int, plant: str, rate: float, **scan_kwargs
) -> tuple[float, float]:
    """(share of planted pairs with any flag, share where the planted opener is the top finding)."""
    token = " ".join(plant.lower().strip("!.:").split())
    hits = first = 0
    for s in range(seeds):
        flagged = scan(*pair(1000 + s, n, plant=plant, rate=rate), **scan_kwargs).flagged
        hits += bool(flagged)
        first += bool(flagged) and flagged[0].token == token
    return hits / seeds, first / seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlhfkit.hacking.calibrate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=100, help="synthetic pairs per setting")
    parser.add_argument(
        "--responses", type=int, nargs="+", default=[100, 200, 400], help="responses per side"
    )
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2], help="planted shares"
    )
    parser.add_argument(
        "--world", action="store_true", help="also measure on the demo world's text"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print("false-flag rate (share of clean pairs with any flag), alpha = 0.05")
    for n in args.responses:
        bh = false_flag_rate(args.seeds, n, correction="bh")
        holm = false_flag_rate(args.seeds, n, correction="holm")
        bh_ind = false_flag_rate(args.seeds, n, same_prompts=False)
        naive = false_flag_rate(args.seeds, n, same_prompts=False, naive=True)
        print(
            f"  {n:4d} responses/side: same prompts: BH {bh:.3f}, Holm {holm:.3f};"
            f" independent prompts: BH {bh_ind:.3f}, naive Poisson baseline {naive:.3f}"
        )
    print(
        "detection power for a 'Fantastic!' opener in a share of tuned responses (any flag / top finding)"
    )
    for n in args.responses:
        cells = []
        for rate in args.rates:
            hit, first = detection_power(args.seeds, n, "Fantastic!", rate)
            cells.append(f"{rate:.0%}: {hit:.2f}/{first:.2f}")
        print(f"  {n:4d} responses/side: " + "   ".join(cells))
    if args.world:
        n = 200
        clean = np.mean([bool(scan(*world_pair(s, n)).flagged) for s in range(args.seeds)])
        print(f"demo world, {n} responses/side: clean pairs with any flag {clean:.3f}")
        for label, dist in (
            (
                "'fantastic' opener 20% -> 48% of responses",
                dict(p_fantastic_good=1.0, p_fantastic_other=0.3),
            ),
            ("fewer factual errors (no opener change)", dict(p_error=0.2)),
        ):
            hit = first = 0
            for s in range(args.seeds):
                flagged = scan(*world_pair(1000 + s, n, **dist)).flagged
                hit += bool(flagged)
                first += bool(flagged) and flagged[0].token == "fantastic"
            print(
                f"  {label}: any flag {hit / args.seeds:.2f}, 'fantastic' first {first / args.seeds:.2f}"
            )
    print(f"({args.seeds} seeds per cell, {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
