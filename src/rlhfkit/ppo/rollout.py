"""Rollouts: left-padded prompt batches, sampling with the KV cache, truncation at the stop token,
and the no-gradient forward passes that give each sampled token its logprobs and value.

The details follow lm-human-preferences and "The N Implementation Details of RLHF with PPO"
(Huang et al. 2023): prompts are padded on the *left* with a pad token distinct from EOS so that
every response starts at the same column; position ids count real tokens only, so a padded prompt
sees the same positions as an unpadded one; sampling is plain temperature sampling (no top-k /
top-p unless asked); everything after the first stop token is replaced by padding and masked out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.chat import Prompt, as_text, render_prompt
from rlhfkit.ops import logprobs_from_logits


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into ``(input_ids, attention_mask)``, both (B, T), padded on the left."""
    width = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[i, width - len(seq) :] = 1
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only: (B, T) -> (B, T), 0 on left padding.

    Without this a left-padded prompt would start at position ``n_pad`` and its logprobs would
    differ from the same prompt unpadded (the same rule ``transformers.generate`` applies).
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def encode_prompts(
    tokenizer,
    prompts: list[str],
    pad_id: int,
    max_prompt_length: int | None = None,
    chat: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize and left-pad prompts; a prompt longer than ``max_prompt_length`` keeps its *end*
    (the part next to the response). ``chat``: the prompts were rendered with a chat template,
    which writes BOS and its markers itself, so no special tokens are added."""
    from rlhfkit.chat import encode_rendered

    encoded = encode_rendered(tokenizer, prompts, chat)
    if max_prompt_length is not None:
        encoded = [ids[-max_prompt_length:] for ids in encoded]
    return left_pad(encoded, pad_id)


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_length: int,
    temperature: float,
    pad_id: int,
    stop_ids: list[int],
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Sample up to ``response_length`` tokens after each prompt with the KV cache.

    input_ids, attention_mask: (B, P) left-padded. Returns responses (B, response_length), filled
    with ``pad_id`` after a row stops (generation ends early once every row hit a stop token).
    A fresh ``GenerationConfig`` is used so that defaults stored with the model (top_k=50,
    repetition penalties, ...) never change the sampling distribution behind PPO's back.
    """
    from transformers import GenerationConfig

    gen_config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        # 0 and 1.0 switch the filters off explicitly: None would let transformers fill in its
        # own default (top_k=50), so samples would come from a truncated distribution while
        # PPO's logprobs, ratio and KL are computed under the full softmax.
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=response_length,
        min_new_tokens=0,
        pad_token_id=pad_id,
        eos_token_id=stop_ids,
        use_cache=True,
    )
    from transformers.utils import logging as hf_logging

    # Clear the model's own defaults so only our settings apply. (Verbosity: transformers drops an
    # all-ones attention mask and then warns about the pad ids it put after finished rows.)
    saved, verbosity = model.generation_config, hf_logging.get_verbosity()
    model.generation_config = GenerationConfig()
    hf_logging.set_verbosity_error()
    try:
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=gen_config,
        )  # (B, P + r), r ≤ response_length
    finally:
        model.generation_config = saved
        hf_logging.set_verbosity(verbosity)
    responses = out[:, input_ids.shape[1] :]  # (B, r)
    if responses.shape[1] < response_length:
        fill = responses.new_full(
            (responses.shape[0], response_length - responses.shape[1]), pad_id
        )
        responses = torch.cat([responses, fill], dim=1)  # (B, R)
    return responses


def truncate_after_stop(
    responses: torch.Tensor, stop_ids: list[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep each response up to and including its first stop token; pad and mask the rest.

    responses: (B, R). Returns ``(responses, response_mask, has_stop)``: (B, R) with ``pad_id``
    after the stop token, (B, R) long mask (1 = real token, the stop token included: its
    probability is part of what PPO trains), and (B,) bool — False for responses that never
    stopped (they keep all R tokens and get ``missing_eos_penalty``).
    """
    is_stop = torch.zeros_like(responses, dtype=torch.bool)
    for sid in stop_ids:
        is_stop |= responses == sid
    R = responses.shape[1]
    idx = torch.arange(R, device=responses.device).expand_as(responses)  # (B, R)
    first_stop = torch.where(is_stop, idx, torch.full_like(idx, R)).min(dim=1).values  # (B,)
    has_stop = first_stop < R
    response_mask = (idx <= first_stop.unsqueeze(1)).long()  # (B, R)
    truncated = torch.where(response_mask.bool(), responses, torch.full_like(responses, pad_id))
    return truncated, response_mask, has_stop


def decode_responses(tokenizer, responses: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    """Response texts (special tokens such as EOS dropped), what the reward model and the reward
    function read."""
    rows = [r[m.bool()].tolist() for r, m in zip(responses, response_mask, strict=True)]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


# ----------------------------------------------------------------------------- PPO's rollouts


@dataclass(frozen=True)
class Rollout:
    """One batch of sampled responses (local to this process). Shapes: B rows, P prompt, R
    response."""

    prompts: list[str]  # the prompts' text (samples.jsonl, reward functions, the monitor)
    texts: list[str]  # the decoded responses
    query_responses: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R)
    position_ids: torch.Tensor  # (B, P + R)
    responses: torch.Tensor  # (B, R)
    response_mask: torch.Tensor  # (B, R) float
    has_stop: torch.Tensor  # (B,) bool


@torch.no_grad()
def sample_rollout(
    policy: Any,
    tokenizer: Any,
    prompts: list[Prompt],
    *,
    chat: bool,
    pad_id: int,
    stop_ids: list[int],
    response_length: int,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    max_prompt_length: int | None = None,
    device: torch.device | str = "cpu",
) -> Rollout:
    """Render the prompts (chat template or plain text), left-pad them, sample a response each,
    truncate after the stop token and decode."""
    rendered = [render_prompt(tokenizer, p, chat) for p in prompts]
    prompt_ids, prompt_mask = encode_prompts(tokenizer, rendered, pad_id, max_prompt_length, chat)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)  # (B, P)
    raw = generate(
        policy,
        prompt_ids,
        prompt_mask,
        response_length,
        temperature,
        pad_id,
        stop_ids,
        top_k,
        top_p,
    )  # fmt: skip  (B, R)
    responses, response_mask, has_stop = truncate_after_stop(raw, stop_ids, pad_id)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)  # (B, P + R)
    return Rollout(
        prompts=[as_text(p) for p in prompts],
        texts=decode_responses(tokenizer, responses, response_mask),
        query_responses=torch.cat([prompt_ids, responses], dim=1),  # (B, P + R)
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        responses=responses,
        response_mask=response_mask.float(),
        has_stop=has_stop,
    )


@dataclass(frozen=True)
class RolloutForward:
    """What the frozen models say about a rollout's tokens: logprobs under the policy and the
    reference (temperature applied), the critic's values, all (B, R) and 0 off the mask; and the
    frozen critic trunk's hidden states (B, R + 1, H), kept for the PPO epochs (None otherwise)."""

    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    critic_hidden: torch.Tensor | None


@torch.no_grad()
def rollout_forward(
    model: Any,
    reference_logits: Callable[..., torch.Tensor],
    critic_trunk: Any | None,
    roll: Rollout,
    temperature: float,
    forward_batch_size: int | None = None,
) -> RolloutForward:
    """Policy logprobs, reference logprobs and values on the response tokens, in batches of
    ``forward_batch_size`` rows. ``model`` is the ``ActorCritic``; ``reference_logits(ids, mask,
    positions, keep)`` gives the reference's logits of the last ``keep`` positions; a
    ``critic_trunk`` (a frozen reward model's) is run once here and its states are returned."""
    R = roll.responses.shape[1]
    B = roll.responses.shape[0]
    step = forward_batch_size or B
    logprobs, ref_logprobs, values, hiddens = [], [], [], []
    for s in range(0, B, step):
        rows = slice(s, s + step)
        ids, am, pos = (
            roll.query_responses[rows],
            roll.attention_mask[rows],
            roll.position_ids[rows],
        )
        tokens = roll.responses[rows]
        # keep R + 1 positions: position P-1 predicts the first response token; the last
        # position predicts nothing and is dropped.
        hidden = None
        if critic_trunk is not None:  # computed once here, reused by every PPO epoch
            hidden = critic_trunk(
                input_ids=ids, attention_mask=am, position_ids=pos, use_cache=False
            ).last_hidden_state[:, -(R + 1) :]  # (b, R + 1, H)
            hiddens.append(hidden)
        logits, v = model(ids, am, pos, keep=R + 1, critic_hidden=hidden)
        logprobs.append(logprobs_from_logits(logits[:, :-1], tokens, temperature))
        values.append(v[:, :-1].float())
        ref_logits = reference_logits(ids, am, pos, R + 1)
        ref_logprobs.append(logprobs_from_logits(ref_logits[:, :-1], tokens, temperature))
    mask = roll.response_mask
    return RolloutForward(
        logprobs=torch.cat(logprobs) * mask,
        ref_logprobs=torch.cat(ref_logprobs) * mask,
        values=torch.cat(values) * mask,
        critic_hidden=torch.cat(hiddens) if hiddens else None,
    )
