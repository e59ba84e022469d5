"""PPO's rollouts: a batch of prompts sampled through the one sampling path
(:mod:`rlhfkit.collect.generate`), and the no-gradient forward passes that give each sampled
token its logprobs under the policy and the reference, and its value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.chat import Prompt, as_text, render_prompt
from rlhfkit.collect.generate import (
    decode_responses,
    encode_prompts,
    generate,
    position_ids_from_mask,
    truncate_after_stop,
)
from rlhfkit.ops import logprobs_from_logits
from rlhfkit.runtime.packing import packed_linears


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


def concat_rollouts(rolls: list[Rollout], pad_id: int) -> Rollout:
    """Rollouts sampled separately (each padded to ``response_length``), as one batch: their prompts
    left-padded to the widest one (masked out, at position 0, as :func:`sample_rollout` pads)."""
    if len(rolls) == 1:
        return rolls[0]
    width = max(r.query_responses.shape[1] for r in rolls)  # P + R of the widest prompt

    def left(t: torch.Tensor, value: int) -> torch.Tensor:  # (b, P_i + R) -> (b, P + R)
        return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

    return Rollout(
        prompts=[p for r in rolls for p in r.prompts],
        texts=[t for r in rolls for t in r.texts],
        query_responses=torch.cat([left(r.query_responses, pad_id) for r in rolls]),
        attention_mask=torch.cat([left(r.attention_mask, 0) for r in rolls]),
        position_ids=torch.cat([left(r.position_ids, 0) for r in rolls]),
        responses=torch.cat([r.responses for r in rolls]),  # (B, R)
        response_mask=torch.cat([r.response_mask for r in rolls]),
        has_stop=torch.cat([r.has_stop for r in rolls]),
    )


def chunk_seed(seed: int, update: int, chunk: int) -> int:
    """The seed of one sampling chunk (``--sample-chunk``): a function of the run's seed, the update
    and the chunk's place in the global batch only."""
    return ((seed * 1_000_003 + update) * 1_000_033 + chunk) % 2**63


@dataclass(frozen=True)
class RolloutSampler:
    """How a run's policy answers prompts: its tokenizer and prompt rendering, the stop and pad
    ids, and the sampling settings of the config (the same for training and the monitor)."""

    tokenizer: Any
    chat: bool
    pad_id: int
    stop_ids: list[int]
    response_length: int
    temperature: float
    top_k: int
    top_p: float
    max_prompt_length: int | None
    device: Any
    seed: int  # --seed, for --sample-chunk's seeds
    chunk: int  # --sample-chunk (0: the whole batch at once)

    @classmethod
    def from_config(
        cls, cfg: Any, tokenizer: Any, chat: bool, pad_id: int, stop_ids: list[int], device: Any
    ) -> RolloutSampler:
        """The sampling settings of ``cfg`` (a ``PPOConfig``) for a policy that reads and writes
        text this way."""
        return cls(
            tokenizer, chat, pad_id, stop_ids, cfg.response_length, cfg.temperature, cfg.top_k,
            cfg.top_p, cfg.max_prompt_length, device, seed=cfg.seed, chunk=cfg.sample_chunk,
        )  # fmt: skip

    def sample(self, policy: Any, prompts: list[Prompt]) -> Rollout:
        return sample_rollout(
            policy, self.tokenizer, prompts, chat=self.chat, pad_id=self.pad_id,
            stop_ids=self.stop_ids, response_length=self.response_length,
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            max_prompt_length=self.max_prompt_length, device=self.device,
        )  # fmt: skip

    def sample_batch(
        self, policy: Any, prompts: list[Prompt], first_row: int, update: int
    ) -> Rollout:
        """This process's share of update ``update``'s global batch (which starts at row
        ``first_row`` of it); with ``--sample-chunk C`` sampled C rows at a time, each chunk from
        its own seed, so the samples do not depend on how the batch is split across processes."""
        if self.chunk <= 0:
            return self.sample(policy, prompts)
        rolls = []
        with packed_linears(policy, rows=self.chunk):  # packed once, for every chunk
            for start in range(0, len(prompts), self.chunk):
                torch.manual_seed(chunk_seed(self.seed, update, (first_row + start) // self.chunk))
                rolls.append(self.sample(policy, prompts[start : start + self.chunk]))
        return concat_rollouts(rolls, self.pad_id)

    def answers(
        self, policy: Any, prompts: list[Prompt], batch: int
    ) -> tuple[list[str], list[bool]]:
        """The policy's answers to ``prompts``, ``batch`` at a time, and whether each stopped."""
        texts: list[str] = []
        has_eos: list[bool] = []
        with packed_linears(policy, rows=batch):  # packed once, for every batch
            for s in range(0, len(prompts), batch):
                roll = self.sample(policy, prompts[s : s + batch])
                texts += roll.texts
                has_eos += roll.has_stop.tolist()
        return texts, has_eos


@dataclass(frozen=True)
class RolloutForward:
    """What the frozen models say about a rollout's tokens: logprobs under the policy and the
    reference (temperature applied), the critic's values, all (B, R) and 0 off the mask; and the
    frozen critic trunk's hidden states (B, R + 1, H), kept for the PPO epochs (None otherwise)."""

    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    critic_hidden: torch.Tensor | None


def reference_logits(ref_model: Any | None, policy: Any) -> Callable[..., torch.Tensor]:
    """``fn(ids, mask, positions, keep)``: the reference's logits of the last ``keep`` positions;
    the reference is the frozen copy ``ref_model``, or with LoRA (``ref_model`` None) ``policy``
    itself with its adapters disabled (no second copy in memory)."""

    def logits(ids: torch.Tensor, am: torch.Tensor, pos: torch.Tensor, keep: int) -> torch.Tensor:
        kwargs = dict(
            input_ids=ids, attention_mask=am, position_ids=pos, logits_to_keep=keep, use_cache=False
        )
        if ref_model is not None:
            return ref_model(**kwargs).logits[:, -keep:]
        with policy.disable_adapter():  # LoRA: the reference is the base model
            return policy(**kwargs).logits[:, -keep:]

    return logits


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
