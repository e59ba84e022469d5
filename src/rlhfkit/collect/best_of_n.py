"""Best-of-n: sample n responses per prompt from a policy and keep the one a reward model (or an
ensemble, with its objective) scores highest. No training; its KL from the policy is known in
closed form, ``log n − (n − 1)/n`` (:func:`rlhfkit.hacking.overoptimization.kl_best_of_n`), which
makes it the reference point of Gao et al.'s over-optimization curves and, with an ensemble, one
of Coste et al.'s mitigations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


def best_of_n(
    policy: str | Path,
    reward: Any,
    prompts: list[Any],
    n: int,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    chat_template: str = "auto",
    gold_fn: Any | None = None,
) -> Iterator[dict[str, Any]]:
    """For each prompt, ``{"prompt", "response", "score", "index", "scores"}`` (and ``"gold"``
    with ``gold_fn``): the chosen response, its score, its place among the n samples, every
    sample's score. ``reward`` is a reward model or an ensemble (anything with ``score``). The
    policy is loaded before this returns; the sampling happens as the iterator is consumed."""
    from rlhfkit.collect.generate import generate_candidates

    if n < 1:
        raise ValueError("n must be at least 1")
    groups = generate_candidates(
        policy, prompts, k=n, max_new_tokens=max_new_tokens, temperature=temperature,
        top_p=top_p, seed=seed, batch_size=batch_size, chat_template=chat_template,
    )  # fmt: skip
    return _best_rows(groups, reward, n, gold_fn)


def _best_rows(
    groups: Iterator[dict[str, Any]], reward: Any, n: int, gold_fn: Any | None
) -> Iterator[dict[str, Any]]:
    from rlhfkit.chat import as_text

    for group in groups:
        prompt, texts = group["prompt"], [r["text"] for r in group["responses"]]
        scores = reward.score([prompt] * n, texts).tolist()
        best = max(range(n), key=lambda j: scores[j])  # the first one on a tie
        row = {"prompt": prompt, "response": texts[best], "score": scores[best], "index": best,
               "scores": scores}  # fmt: skip
        if gold_fn is not None:
            row["gold"] = float(gold_fn([as_text(prompt)], [texts[best]])[0])
        yield row
