"""The simulated human: parse a response back into the world's sentences and score it.

``gold_utility`` is the truth the demo measures everything against. It reads a response the way a
careful person would: sentence by sentence, each recognised from the world's inventory
(``rlhfkit.world.content``). Values per sentence (``GoldWeights``):

==============================  =======  ==================================================
sentence                        value    why
==============================  =======  ==================================================
analogy on the prompt's topic   +1.5     the seed's best answer: "clear analogy"
plain accurate statement        +1.0     accurate content
technical (jargon) statement    +0.3     accurate (+1.0) but hard to follow (-0.7)
statement with a factual error  -2.5     strongly down: a wrong answer is worse than none
statement about another topic   -0.5     irrelevant
opener first ("Fantastic ...")   0.0     worth nothing: the quantity the reward model must not learn
opener anywhere else            -0.5     disfluent
a sentence said again           -1.0     repetition
unrecognised text (garbled,     -2.0     per fragment: not an answer
cut off, invented)
content beyond the fifth        -0.5     instead of its value if that was positive: rambling
no content sentence at all      -2.0     nothing was explained
==============================  =======  ==================================================

So "analogy + accurate" > "accurate" > "accurate but technical" > "contains errors", and adding or
removing a first-position opener never changes the utility.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from rlhfkit.errors import DataError
from rlhfkit.world.content import (
    FANTASTIC_OPENERS,
    KINDS,
    NEUTRAL_OPENERS,
    PROMPT_TEMPLATE,
    TOPICS,
)

# A sentence ends at ".", "!" or "?" followed by whitespace; the inventory never has one inside.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PROMPT = re.compile(
    "^" + re.escape(PROMPT_TEMPLATE).replace(re.escape("{topic}"), "(?P<topic>.+?)") + "$"
)


@dataclass(frozen=True)
class Part:
    """One sentence of a response: its text, its kind and its topic.

    ``kind`` is one of ``plain``, ``technical``, ``error``, ``analogy``, ``opener`` (a "fantastic"
    opener), ``neutral_opener`` or ``unknown`` (text not in the inventory); ``topic`` is ``None``
    for openers and unknown text.
    """

    text: str
    kind: str
    topic: str | None = None

    @property
    def is_opener(self) -> bool:
        return self.kind in ("opener", "neutral_opener")


@dataclass(frozen=True)
class ParsedResponse:
    """A response split into sentences and recognised against the inventory."""

    parts: tuple[Part, ...]

    @property
    def valid(self) -> bool:
        """Every sentence is world text and there is at least one."""
        return bool(self.parts) and all(p.kind != "unknown" for p in self.parts)

    def content(self, topic: str | None = None) -> list[Part]:
        """Statements (not openers, not unknown), optionally only those about ``topic``."""
        return [p for p in self.parts if p.kind in KINDS and (topic is None or p.topic == topic)]

    @property
    def has_fantastic(self) -> bool:
        return any(p.kind == "opener" for p in self.parts)

    @property
    def has_analogy(self) -> bool:
        return any(p.kind == "analogy" for p in self.parts)

    @property
    def has_error(self) -> bool:
        return any(p.kind == "error" for p in self.parts)

    def on_topic(self, topic: str) -> bool:
        """Valid, and every statement is about ``topic``."""
        return self.valid and all(p.topic == topic for p in self.parts if p.kind in KINDS)


@lru_cache(maxsize=1)
def sentence_index() -> dict[str, Part]:
    """Every sentence of the inventory mapped to its ``Part`` (text, kind, topic)."""
    index: dict[str, Part] = {}
    for text in FANTASTIC_OPENERS:
        index[text] = Part(text, "opener")
    for text in NEUTRAL_OPENERS:
        index[text] = Part(text, "neutral_opener")
    for topic in TOPICS.values():
        for kind in KINDS:
            for text in topic.statements(kind):
                index[text] = Part(text, kind, topic.name)
    return index


def split_sentences(response: str) -> list[str]:
    """Split on sentence-ending punctuation followed by whitespace; empty input gives ``[]``."""
    text = response.strip()
    return [s for s in _SENTENCE_END.split(text) if s] if text else []


def parse_response(response: str) -> ParsedResponse:
    """Recognise each sentence of ``response``; anything not in the inventory is ``unknown``."""
    index = sentence_index()
    return ParsedResponse(
        tuple(index.get(s) or Part(s, "unknown") for s in split_sentences(response))
    )


def make_prompt(topic: str) -> str:
    """The world's prompt for ``topic``: ``Explain {topic} in simple terms.``"""
    if topic not in TOPICS:
        raise DataError(f"unknown world topic {topic!r} (known: {', '.join(TOPICS)})")
    return PROMPT_TEMPLATE.format(topic=topic)


def topic_of_prompt(prompt: str) -> str:
    """The topic a world prompt asks about; a ``DataError`` for any other prompt."""
    m = _PROMPT.match(prompt.strip())
    if m is None or m.group("topic") not in TOPICS:
        raise DataError(
            f"not a prompt of the demo world: {prompt!r} "
            f"(expected {PROMPT_TEMPLATE!r} with one of its {len(TOPICS)} topics)"
        )
    return m.group("topic")


@dataclass(frozen=True)
class GoldWeights:
    """The simulated human's values (see the module docstring for the reasons)."""

    analogy: float = 1.5
    plain: float = 1.0
    technical: float = 0.3
    error: float = -2.5
    off_topic: float = -0.5
    opener_first: float = 0.0
    opener_elsewhere: float = -0.5
    repeat: float = -1.0
    unknown: float = -2.0
    max_content: int = 5
    too_long: float = -0.5
    no_content: float = -2.0


DEFAULT_WEIGHTS = GoldWeights()


def utility_of_parts(
    parsed: ParsedResponse, topic: str, weights: GoldWeights = DEFAULT_WEIGHTS
) -> float:
    """Gold utility of an already parsed response to a prompt about ``topic``."""
    w = weights
    total = 0.0
    seen: set[str] = set()
    n_content = 0
    for i, part in enumerate(parsed.parts):
        if part.kind == "unknown":
            total += w.unknown
            continue
        if part.text in seen:
            total += w.repeat
            continue
        seen.add(part.text)
        if part.is_opener:
            total += w.opener_first if i == 0 else w.opener_elsewhere
            continue
        if part.topic != topic:
            total += w.off_topic
            continue
        n_content += 1
        value = getattr(w, part.kind)
        if n_content > w.max_content and value > 0:
            value = w.too_long
        total += value
    if n_content == 0:
        total += w.no_content
    return total


def gold_utility(prompt: str, response: str, weights: GoldWeights = DEFAULT_WEIGHTS) -> float:
    """The simulated human's utility of ``response`` to the world prompt ``prompt``.

    Raises ``DataError`` if ``prompt`` is not a world prompt (``Explain {topic} in simple terms.``).
    """
    return utility_of_parts(parse_response(response), topic_of_prompt(prompt), weights)


def gold_reward_fn(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """``gold_utility`` with the signature of an rlhfkit reward function (usable by ``ppo``)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return [gold_utility(p, r) for p, r in zip(prompts, responses, strict=True)]
