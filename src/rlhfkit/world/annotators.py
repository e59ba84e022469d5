"""Simulated annotators: noisy people who rank K candidates by the gold utility.

Each annotator perceives every response's utility with independent Gumbel noise and ranks by the
perceived value. Sorting ``u_i + τ·G_i`` with ``G_i ~ Gumbel(0, 1)`` draws a ranking from the
Plackett-Luce model with weights ``exp(u_i / τ)`` (Luce 1959; Plackett 1975; the "Gumbel-max trick"),
so for any two responses the annotator prefers the better one with probability
``σ(|u_i - u_j| / τ)`` — the Bradley-Terry model the reward model is trained under. ``τ`` is the
annotator's noise; the default pool mixes careful and sloppy people.

Ties: an annotator declares two neighbouring responses tied when their perceived utilities differ by
less than ``tie_margin`` (chained: a, b, c are one tie group if a~b and b~c). Identical texts share
one noise draw, so they are always tied.

**The noise ceiling** is the agreement between one annotator's strict pairwise judgements and gold,
over pairs that gold orders strictly::

    ceiling = Σ_pairs P(correct) / Σ_pairs P(not tied)
    P(correct)   = σ((|Δu| - m) / τ)
    P(not tied)  = σ((|Δu| - m) / τ) + σ((-|Δu| - m) / τ)

(``u_i + τG_i - u_j - τG_j`` is logistic with mean ``Δu`` and scale ``τ``), averaged over the
annotators of the pool. Because gold is the Bayes-optimal predictor of a label, the same number is
also the best pairwise accuracy any model can reach when it is scored against annotator labels.
``noise_ceiling`` computes it exactly for each pair; the chaining of ties inside a ranking of K > 2
changes the simulated rate by well under 0.01 (the tests check it by Monte Carlo). A reward model
scored against *gold* can exceed it, because training on many noisy labels averages the noise out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from rlhfkit.data import Ranking, Response
from rlhfkit.data.pairs import pair_agreement
from rlhfkit.world.gold import gold_utility

# Gold utilities closer than this are equal (they are sums of a few fixed values).
GOLD_TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SimulatedAnnotator:
    """One simulated person: a name, a noise scale and a tie margin (both in gold units)."""

    name: str
    noise: float = 1.0
    tie_margin: float = 0.15

    def __post_init__(self) -> None:
        if self.noise <= 0:
            raise ValueError(f"annotator {self.name!r}: noise must be > 0, got {self.noise}")
        if self.tie_margin < 0:
            raise ValueError(
                f"annotator {self.name!r}: tie_margin must be >= 0, got {self.tie_margin}"
            )


# Gold utilities of the base policy's candidates spread with a standard deviation of about 2, so
# τ = 1 is a person who confuses responses about one plain statement apart a quarter of the time.
DEFAULT_ANNOTATORS: tuple[SimulatedAnnotator, ...] = (
    SimulatedAnnotator("sim-1", noise=0.8),
    SimulatedAnnotator("sim-2", noise=1.0),
    SimulatedAnnotator("sim-3", noise=1.0),
    SimulatedAnnotator("sim-4", noise=1.2),
    SimulatedAnnotator("sim-5", noise=1.5),
)


def _gumbel(rng: random.Random) -> float:
    return -math.log(-math.log(rng.random() or 1e-300))


def perceive(
    utilities: Sequence[float],
    texts: Sequence[str],
    annotator: SimulatedAnnotator,
    rng: random.Random,
) -> list[float]:
    """Perceived utilities ``u_i + τ·G_i``; identical texts get the same draw."""
    draws: dict[str, float] = {}
    out = []
    for u, text in zip(utilities, texts, strict=True):
        if text not in draws:
            draws[text] = _gumbel(rng)
        out.append(u + annotator.noise * draws[text])
    return out


def ranking_from_scores(
    ids: Sequence[str], scores: Sequence[float], tie_margin: float = 0.0
) -> list[str | list[str]]:
    """Ids best first; neighbours closer than ``tie_margin`` (chained) form one tie group."""
    order = sorted(range(len(ids)), key=lambda i: -scores[i])
    groups: list[list[str]] = []
    prev: float | None = None
    for i in order:
        if prev is not None and prev - scores[i] < tie_margin:
            groups[-1].append(ids[i])
        else:
            groups.append([ids[i]])
        prev = scores[i]
    return [g[0] if len(g) == 1 else g for g in groups]


def _as_responses(responses: Sequence[Response | str]) -> list[Response]:
    return [
        r if isinstance(r, Response) else Response(id=f"r{i}", text=r)
        for i, r in enumerate(responses)
    ]


def annotate(
    prompt: str,
    responses: Sequence[Response | str],
    annotators: Sequence[SimulatedAnnotator],
    rng: random.Random,
    utilities: Sequence[float] | None = None,
) -> list[Ranking]:
    """Each of ``annotators`` ranks ``responses`` to ``prompt``: one ``Ranking`` per annotator,
    except that an annotator who finds every response tied skips the prompt (a fully tied ranking
    holds no comparison).

    Plain strings get ids ``r0, r1, ...``. ``utilities`` (gold, if already computed) saves re-parsing.
    """
    resp = _as_responses(responses)
    if utilities is None:
        utilities = [gold_utility(prompt, r.text) for r in resp]
    ids = [r.id for r in resp]
    texts = [r.text for r in resp]
    out = []
    for a in annotators:
        scores = perceive(utilities, texts, a, rng)
        ranking = ranking_from_scores(ids, scores, a.tie_margin)
        if len(ranking) == 1:
            continue  # all tied (e.g. K identical texts): the annotator skips, as people do
        out.append(
            Ranking(
                prompt=prompt,
                responses=list(resp),
                ranking=ranking,
                annotator=a.name,
                meta={"simulated": True, "noise": a.noise},
            )
        )
    return out


def simulate_rankings(
    prompts: Sequence[str],
    candidates: Sequence[Sequence[Response | str]],
    annotators_per_prompt: int = 3,
    pool: Sequence[SimulatedAnnotator] = DEFAULT_ANNOTATORS,
    seed: int = 0,
) -> list[Ranking]:
    """Rank every prompt's candidates by ``annotators_per_prompt`` people drawn from ``pool``.

    Returns up to ``len(prompts) * annotators_per_prompt`` rankings (fewer when someone skips an
    all-tied group), grouped by prompt in the order of ``prompts``.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate groups")
    if not 1 <= annotators_per_prompt <= len(pool):
        raise ValueError(
            f"annotators_per_prompt must be in 1..{len(pool)}, got {annotators_per_prompt}"
        )
    rng = random.Random(seed)
    out: list[Ranking] = []
    for prompt, group in zip(prompts, candidates, strict=True):
        people = rng.sample(list(pool), annotators_per_prompt)
        out += annotate(prompt, group, people, rng)
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def noise_ceiling(
    utility_groups: Sequence[Sequence[float]],
    pool: Sequence[SimulatedAnnotator] = DEFAULT_ANNOTATORS,
) -> float:
    """How often one annotator's strict pairwise judgement agrees with gold: the best pairwise
    accuracy any model can reach against annotator labels (exact per pair; see the module
    docstring). A model scored against gold itself can exceed it by averaging the noise out. ``utility_groups``: the gold utilities of each prompt's K
    candidates. Annotators are weighted equally (each prompt draws them uniformly from ``pool``)."""
    correct = 0.0
    strict = 0.0
    for group in utility_groups:
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                d = abs(group[i] - group[j])
                if d <= GOLD_TIE_TOLERANCE:
                    continue
                for a in pool:
                    p_right = _sigmoid((d - a.tie_margin) / a.noise)
                    p_wrong = _sigmoid((-d - a.tie_margin) / a.noise)
                    correct += p_right
                    strict += p_right + p_wrong
    if strict == 0:
        raise ValueError("no pair of candidates differs in gold utility: the ceiling is undefined")
    return correct / strict


def label_accuracy(rankings: Sequence[Ranking]) -> float:
    """Share of the rankings' strict pairs that agree with gold, over pairs gold orders strictly
    (the empirical counterpart of ``noise_ceiling``)."""
    cache: dict[tuple[str, str], float] = {}

    def gold(prompt: str, text: str) -> float:
        if (prompt, text) not in cache:
            cache[prompt, text] = gold_utility(prompt, text)
        return cache[prompt, text]

    right = total = 0
    for r in rankings:
        utilities = [gold(r.prompt, x.text) for x in r.responses]
        a, n = pair_agreement(
            [-k for k in r.ranks()], utilities, GOLD_TIE_TOLERANCE, skip_ties=True
        )
        right, total = right + a, total + n
    if total == 0:
        raise ValueError("no strictly ordered pair with distinct gold utilities")
    return right / total


def pairwise_agreement(a: Ranking, b: Ranking) -> tuple[int, int]:
    """``(agree, both_strict)``: over pairs both rankings order strictly, how many they order alike."""
    ra = dict(zip((r.id for r in a.responses), a.ranks(), strict=True))
    rb = dict(zip((r.id for r in b.responses), b.ranks(), strict=True))
    ids = sorted(ra)
    return pair_agreement([-ra[i] for i in ids], [-rb[i] for i in ids], skip_ties=True)
