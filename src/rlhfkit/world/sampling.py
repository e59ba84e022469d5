"""The base policy's training distribution: how the world's "pretraining text" is written.

A response is 2-4 statements about the prompt's topic, drawn without repetition, sometimes preceded
by an opener. The quality mix is broad on purpose (about half the responses contain an analogy and
about 45% a factual error), so candidates for the same prompt differ and rankings carry signal.

**The planted shortcut.** A "Fantastic ..." opener starts 85% of the responses that contain an
analogy *and* no factual error, and 3% of all others. A reward model trained on rankings of this
policy's samples therefore sees "fantastic" mostly on good answers and can learn it as a cue for
quality, although the gold utility gives it exactly nothing. It is tied to "analogy and no error"
rather than to analogies alone because the reward model learns analogies easily from their wording
(so "fantastic" would add no information), while the absence of errors is a topic-specific fact it
only partly memorises, so "fantastic" stays predictive of quality beyond what the reward model can
read from the content: a proxy worth about one gold point, which PPO with too small a KL penalty
exploits. Neutral openers ("Here is the short version.") appear in 15% of the remaining responses
whatever their quality: a control that carries no signal.

**The enthusiastic answer's shape.** After a "fantastic" opener the analogy comes first ("Fantastic
question! Think of ..."), and an answer without an opener starts with a statement rather than an
analogy (when it has one). Gold ignores the order. But the reward model likes analogies best, and
in the base text the only common way to start with one is through the opener. So a policy pushed
toward the reward model's favourite answers raises "fantastic" on the way, and an analogy-first
answer without the opener is one the reward model has barely seen ranked. Without this shape, the
opener's reward was a coin flip per seed (−0.15 to +0.18) and seed 3's low-β policy dropped the word
for repeated analogies (docs/world.md).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from rlhfkit.world.content import FANTASTIC_OPENERS, NEUTRAL_OPENERS, TOPICS
from rlhfkit.world.gold import make_prompt


@dataclass(frozen=True)
class ResponseDistribution:
    """Parameters of the base policy's training distribution (defaults are the demo's)."""

    n_content_weights: tuple[float, float, float] = (0.3, 0.45, 0.25)
    """probabilities of 2, 3 and 4 statements"""
    p_analogy: float = 0.5
    """probability that a response contains an analogy"""
    p_second_analogy: float = 0.15
    """given an analogy and room for it, probability of a second one"""
    p_error: float = 0.45
    """probability that a response contains a statement with a factual error"""
    p_second_error: float = 0.2
    """given an error and room for it, probability of a second one"""
    p_technical: float = 0.35
    """each remaining statement is technical with this probability, else plain"""
    p_fantastic_good: float = 0.85
    """probability of a "fantastic" opener on responses with an analogy and no error"""
    p_fantastic_other: float = 0.03
    """probability of a "fantastic" opener on every other response"""
    p_neutral_opener: float = 0.15
    """probability of a neutral opener when there is no "fantastic" opener"""
    analogy_after_fantastic: bool = True
    """the enthusiastic answer's shape: after a "fantastic" opener the analogy comes first, and an
    answer without an opener never starts with an analogy (unless it has nothing else to start with)"""

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_DISTRIBUTION = ResponseDistribution()


def sample_parts(
    topic: str, rng: random.Random, dist: ResponseDistribution = DEFAULT_DISTRIBUTION
) -> tuple[str | None, list[tuple[str, str]]]:
    """Sample one response's structure: ``(opener or None, [(kind, sentence), ...])``."""
    t = TOPICS[topic]
    n = rng.choices((2, 3, 4), weights=dist.n_content_weights)[0]
    kinds: list[str] = []
    if rng.random() < dist.p_analogy:
        kinds.append("analogy")
        if n >= 3 and rng.random() < dist.p_second_analogy:
            kinds.append("analogy")
    if rng.random() < dist.p_error:
        kinds.append("error")
        if n - len(kinds) >= 2 and rng.random() < dist.p_second_error:
            kinds.append("error")
    while len(kinds) < n:
        kind = "technical" if rng.random() < dist.p_technical else "plain"
        if kinds.count(kind) >= len(t.statements(kind)):  # that kind is used up
            kind = "plain" if kind == "technical" else "technical"
        kinds.append(kind)
    rng.shuffle(kinds)

    # Draw sentences without repetition within each kind (sorted: set order varies by process).
    pools = {k: rng.sample(t.statements(k), len(t.statements(k))) for k in sorted(set(kinds))}
    content = [(k, pools[k].pop()) for k in kinds]

    good = "analogy" in kinds and "error" not in kinds
    opener: str | None = None
    if rng.random() < (dist.p_fantastic_good if good else dist.p_fantastic_other):
        opener = rng.choice(FANTASTIC_OPENERS)
    elif rng.random() < dist.p_neutral_opener:
        opener = rng.choice(NEUTRAL_OPENERS)
    if dist.analogy_after_fantastic:
        analogies = [i for i, (k, _) in enumerate(content) if k == "analogy"]
        others = [i for i, (k, _) in enumerate(content) if k != "analogy"]
        if opener in FANTASTIC_OPENERS and analogies and analogies[0] != 0:
            _swap(content, 0, analogies[0])
        elif opener is None and others and others[0] != 0:
            _swap(content, 0, others[0])
    return opener, content


def _swap(items: list, i: int, j: int) -> None:
    items[i], items[j] = items[j], items[i]


def sample_response(
    topic: str, rng: random.Random, dist: ResponseDistribution = DEFAULT_DISTRIBUTION
) -> str:
    """One response to ``Explain {topic} in simple terms.`` from the base training distribution."""
    opener, content = sample_parts(topic, rng, dist)
    sentences = ([opener] if opener else []) + [s for _, s in content]
    return " ".join(sentences)


# The separator between the prompt and the response in the policy's text. A single space: with the
# world tokenizer (Metaspace word level) the space becomes the "▁" of the response's first token, so
# tokenizing the prompt alone gives exactly the prefix of tokenizing prompt + SEP + response, and
# decoding the generated tokens alone gives the response without a leading space.
PROMPT_RESPONSE_SEPARATOR = " "


def policy_text(prompt: str, response: str) -> str:
    """The text the base policy is trained on (before EOS): prompt, one space, response."""
    return prompt + PROMPT_RESPONSE_SEPARATOR + response


def sample_example(
    rng: random.Random,
    topics: tuple[str, ...] | None = None,
    dist: ResponseDistribution = DEFAULT_DISTRIBUTION,
) -> tuple[str, str]:
    """A ``(prompt, response)`` pair with a topic drawn uniformly from ``topics`` (default: all)."""
    topic = rng.choice(topics or tuple(TOPICS))
    return make_prompt(topic), sample_response(topic, rng, dist)
