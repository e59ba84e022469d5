"""Sampling a world policy and measuring what it writes: the share of valid world text, of
responses ending with EOS, their gold utility, and the planted "fantastic" shortcut as learned."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.world.content import TOPICS
from rlhfkit.world.gold import make_prompt, parse_response, topic_of_prompt, utility_of_parts

# The temperature the demo samples the base policy at (candidates, PPO, comparison), as OpenAI's
# lm-human-preferences did: a small model's tail of unlikely tokens garbles text at temperature 1.
SAMPLING_TEMPERATURE = 0.7


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int | None = None,
    return_ids: bool = False,
) -> tuple[list[str], list[bool]] | tuple[list[str], list[bool], list[list[int]]]:
    """Sample one response per prompt; returns the texts and whether each ended with EOS, and with
    ``return_ids`` each response's token ids (through its EOS, without padding).

    Prompts are tokenized alone and left-padded, as PPO does: the one sampling path,
    :func:`rlhfkit.collect.generate.sample_responses`.
    """
    from rlhfkit.collect.generate import sample_responses

    texts, ended, ids = sample_responses(
        model, tokenizer, prompts, max_new_tokens, temperature, batch_size, seed
    )
    return (texts, ended, ids) if return_ids else (texts, ended)


def response_logprobs(
    model,
    tokenizer,
    prompts: Sequence[str],
    response_ids: Sequence[Sequence[int]],
    temperature: float = 1.0,
    batch_size: int = 64,
) -> list[float]:
    """``log π(response | prompt)`` of each response: the sum over its tokens (EOS included) of
    the log-probabilities under ``softmax(logits / temperature)``, the distribution it was sampled
    from, as PPO computes them.

    The difference of two policies' sums on a sample of the first is one draw of the k1 estimate
    of ``KL(π ‖ π_ref)`` per response: its mean over samples is the KL PPO penalizes.
    """
    import torch

    from rlhfkit.ops import logprobs_from_logits

    pad = tokenizer.pad_token_id
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        rows = []  # (prompt ids + response ids, prompt length)
        for prompt, resp in zip(
            prompts[start : start + batch_size],
            response_ids[start : start + batch_size],
            strict=True,
        ):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            rows.append((list(prompt_ids) + list(resp), len(prompt_ids)))
        width = max(len(ids) for ids, _ in rows)
        # Right padding: every row keeps the positions it had when it was sampled.
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
        attention = torch.zeros_like(input_ids)
        counted = torch.zeros_like(input_ids, dtype=torch.bool)  # response tokens
        for i, (ids, n_prompt) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            counted[i, n_prompt : len(ids)] = True
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits  # (B, T, V)
        # The logits at t predict the token at t + 1.
        logprobs = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:], temperature)  # (B, T-1)
        out += (logprobs * counted[:, 1:]).sum(1).tolist()
    return out


@dataclass
class PolicyEvaluation:
    """What a policy's samples look like, measured against the world's inventory."""

    prompts: list[str]
    responses: list[str]
    ended_with_eos: list[bool]
    valid: list[bool]
    on_topic: list[bool]
    gold: list[float]
    has_fantastic: list[bool]
    good_content: list[bool]  # valid, with an analogy and no factual error

    def summary(self) -> dict[str, Any]:
        n = len(self.responses)

        def rate(flags: Iterable[bool]) -> float | None:
            flags = list(flags)
            return round(sum(flags) / len(flags), 4) if flags else None

        good = [
            f
            for f, g, v in zip(self.has_fantastic, self.good_content, self.valid, strict=True)
            if v and g
        ]
        other = [
            f
            for f, g, v in zip(self.has_fantastic, self.good_content, self.valid, strict=True)
            if v and not g
        ]
        return {
            "n": n,
            "valid_rate": rate(self.valid),
            "eos_rate": rate(self.ended_with_eos),
            "empty_rate": rate(not r.strip() for r in self.responses),
            "on_topic_rate": rate(self.on_topic),
            "gold_mean": round(sum(self.gold) / n, 4) if n else None,
            "fantastic_rate": rate(self.has_fantastic),
            "fantastic_rate_analogy_no_error": rate(good),
            "fantastic_rate_other": rate(other),
            "n_analogy_no_error": len(good),
        }


def evaluate_texts(
    prompts: Sequence[str], responses: Sequence[str], ended: Sequence[bool]
) -> PolicyEvaluation:
    """Parse and score ``responses`` (each to the world prompt at the same position)."""
    ev = PolicyEvaluation(list(prompts), list(responses), list(ended), [], [], [], [], [])
    for prompt, response in zip(prompts, responses, strict=True):
        topic = topic_of_prompt(prompt)
        parsed = parse_response(response)
        ev.valid.append(parsed.valid)
        ev.on_topic.append(parsed.on_topic(topic))
        ev.gold.append(utility_of_parts(parsed, topic))
        ev.has_fantastic.append(parsed.has_fantastic)
        ev.good_content.append(parsed.valid and parsed.has_analogy and not parsed.has_error)
    return ev


def evaluate_policy(
    model_dir: str | Path,
    n: int = 200,
    seed: int = 0,
    topics: Sequence[str] | None = None,
    max_new_tokens: int = 128,
    temperature: float = SAMPLING_TEMPERATURE,
) -> PolicyEvaluation:
    """Sample ``n`` responses (prompts cycling over ``topics``, default all; at ``temperature``,
    no top-k) and measure them:
    share of valid world text, share ending with EOS, gold utility, and the "fantastic" rate on
    responses with an analogy and no error vs the others (the planted shortcut, as learned)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    names = list(topics) if topics is not None else list(TOPICS)
    prompts = [make_prompt(names[i % len(names)]) for i in range(n)]
    responses, ended = generate_responses(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
    )
    return evaluate_texts(prompts, responses, ended)
