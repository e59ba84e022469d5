"""The one sampling path: prompts left-padded, responses sampled with the KV cache from the full
softmax at a temperature, cut at the first stop token. PPO's rollouts, ``rlhfkit generate``'s
candidates for annotation and the demo world's samples all go through :func:`generate`.

The details follow lm-human-preferences and "The N Implementation Details of RLHF with PPO"
(Huang et al. 2023): prompts are padded on the *left* with a pad id that is no stop token and lies
inside the embedding (:func:`rlhfkit.loading.choose_pad_id`), so that every response starts at the
same column; position ids count real tokens only, so a padded prompt sees the same positions as an
unpadded one; sampling is plain temperature sampling (no top-k / top-p unless asked); everything
after the first stop token is replaced by padding and masked out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlhfkit.collect.gpt2_step import decode_step
from rlhfkit.runtime.packing import packed_linears

if TYPE_CHECKING:
    from rlhfkit.chat import Prompt


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

    The loop is ours rather than ``model.generate``: one forward per token through the model's own
    cache, then :func:`sample_next`. It feeds the model exactly what ``transformers``' sampling
    loop feeds it (the 2-D attention mask grown by one column per step, position ids that count
    real tokens), so its logits are the same, and it leaves out what costs time on a CPU without
    changing the distribution: logits processors that do nothing here, stopping criteria, and
    ``torch.multinomial``, whose exponential draws over the whole vocabulary took a third of the
    demo's sampling time (docs/benchmarks.md, "Generation"). A plain GPT-2 runs through
    :class:`rlhfkit.collect.gpt2_step.GPT2DecodeStep` (its own layers without ``transformers``'
    per-call machinery) once that has matched the model's forward bit for bit. On an x86 CPU the
    model's large linear layers run with oneDNN-packed weights for the length of the call
    (:func:`rlhfkit.runtime.packing.packed_linears`): the same samples on a ~20M GPT-2, 1.1–1.4×
    faster there. No defaults stored with the model
    (top_k=50, repetition penalties, ...) apply: the distribution is ``softmax(logits /
    temperature)``, filtered only by the ``top_k`` / ``top_p`` given here, the one PPO's logprobs,
    ratio and KL are computed under.
    """
    B, P = input_ids.shape  # (B, P)
    device = input_ids.device
    responses = torch.full((B, response_length), pad_id, dtype=torch.long, device=device)
    if response_length < 1 or B == 0:
        return responses
    # the mask of every step is a prefix of this one: finished rows keep attending (to padding),
    # as in transformers' loop; their tokens are replaced by padding below
    mask = torch.ones((B, P + response_length), dtype=attention_mask.dtype, device=device)
    mask[:, :P] = attention_mask
    positions = position_ids_from_mask(attention_mask)  # (B, P)
    next_position = positions[:, -1:] + 1  # (B, 1)
    stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
    unfinished = torch.ones(B, dtype=torch.bool, device=device)
    step = decode_step(model, _ModelStep, capacity=P + response_length)
    with packed_linears(model, rows=B):
        logits = step(input_ids, attention_mask, positions)  # (B, V) at the last prompt position
        for t in range(response_length):
            tokens = sample_next(logits, temperature, top_k, top_p)  # (B,)
            tokens = torch.where(unfinished, tokens, pad_id)
            responses[:, t] = tokens
            unfinished &= ~torch.isin(tokens, stops)
            if t == response_length - 1 or not bool(unfinished.any()):
                break
            logits = step(tokens[:, None], mask[:, : P + t + 1], next_position + t)  # (B, V)
    return responses


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """One token per row from ``softmax(logits / temperature)``: (B, V) -> (B,).

    The filters are ``transformers``' own warpers in ``generate``'s order (temperature, top-k,
    top-p); 0 and 1.0 switch them off. The draw is by inverse transform: one uniform number per row
    against the cumulative distribution (float64, so its rounding is far below any probability
    that matters), where ``torch.multinomial`` draws an exponential number for every entry of the
    vocabulary. Tokens of probability 0 (filtered, or underflowed) are never drawn.
    """
    scores = logits.float()
    if temperature != 1.0:
        scores = scores / temperature
    if top_k or top_p < 1.0:
        from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

        if top_k:
            scores = TopKLogitsWarper(top_k)(None, scores)
        if top_p < 1.0:
            scores = TopPLogitsWarper(top_p)(None, scores)
    cdf = torch.softmax(scores, dim=-1).double().cumsum(-1)  # (B, V)
    # u in [0, total): the last token with probability > 0 takes any rounding left at the top
    u = torch.rand((cdf.shape[0], 1), dtype=torch.float64, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1)  # (B,)


class _ModelStep:
    """One forward through a causal LM's KV cache: the logits of each row's last position.

    The cache is ``transformers``' ``DynamicCache`` built from the model's config (so sliding-window
    and other layer kinds get theirs); the keyword is ``cache`` in recent ``transformers`` and
    ``past_key_values`` before, and a PEFT model passes it on to the model it wraps."""

    def __init__(self, model: Any) -> None:
        import inspect

        from transformers import DynamicCache

        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keep_kw = "logits_to_keep" if "logits_to_keep" in params else None
        try:
            self.cache = DynamicCache(config=base.config)
        except TypeError:  # transformers before 4.56
            self.cache = DynamicCache()

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        kwargs = {self.cache_kw: self.cache}
        if self.keep_kw:
            kwargs[self.keep_kw] = 1  # the LM head on the last position only
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **kwargs,
        )
        return out.logits[:, -1]  # (B, V)


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


def sample_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int | None = None,
) -> tuple[list[str], list[bool], list[list[int]]]:
    """One response per plain-text prompt (tokenized without special tokens, as the demo world's
    text is), in batches of ``batch_size``: the texts, whether each ended with EOS, and each
    response's token ids (through its EOS). Pads with the tokenizer's pad token."""
    if seed is not None:
        torch.manual_seed(seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    texts: list[str] = []
    ended: list[bool] = []
    ids: list[list[int]] = []
    with packed_linears(model, rows=batch_size):  # packed once, for every batch
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start : start + batch_size]), add_special_tokens=False)
            input_ids, attention_mask = left_pad(enc["input_ids"], pad)
            raw = generate(
                model, input_ids, attention_mask, max_new_tokens, temperature, pad, [eos]
            )
            responses, mask, has_stop = truncate_after_stop(raw, [eos], pad)
            rows = [r[m.bool()].tolist() for r, m in zip(responses, mask, strict=True)]
            texts += tokenizer.batch_decode(rows, skip_special_tokens=True)
            ended += has_stop.tolist()
            ids += rows
    return texts, ended, ids


def generate_candidates(
    model_path: str | Path,
    prompts: list[Prompt],
    k: int = 4,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    chat_template: str | bool = "auto",
    device: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"prompt", "responses": [{"id", "text"}]}`` for each prompt, K sampled responses each.

    A prompt is text or a conversation (a list of messages; written back as it was given).
    ``chat_template`` (``auto``/``always``/``never``, see :mod:`rlhfkit.chat`; ``True`` means
    ``always``) decides whether prompts go through the tokenizer's chat template with the
    generation prompt. Text is cut at the first stop token (EOS, or an end-of-turn id from the
    model's generation config) and decoded without special tokens. The same seed gives the same
    candidates on the same machine and library versions. The arguments are checked and the model
    loaded before this returns (so a bad model fails before any progress bar starts); the
    sampling happens as the iterator is consumed.
    """
    from rlhfkit.chat import is_conversational, use_chat_template
    from rlhfkit.loading import choose_pad_id, embedding_rows, load_causal_lm, stop_token_ids
    from rlhfkit.reward.model import quiet_transformers

    if k < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ValueError("k, max_new_tokens and batch_size must be at least 1")
    if temperature <= 0:
        raise ValueError(
            "temperature must be > 0 (this command samples; use a small value for near-greedy)"
        )
    mode = {True: "always", False: "auto"}.get(chat_template, chat_template)  # type: ignore[call-overload]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with quiet_transformers():
        model, tokenizer = load_causal_lm(str(model_path), "--model")
    model = model.to(device).eval()
    chat = use_chat_template(mode, tokenizer, is_conversational(prompts), f"--model {model_path}")
    stop_ids = stop_token_ids(tokenizer, model)
    pad_id = choose_pad_id(tokenizer, stop_ids, embedding_rows(model))
    torch.manual_seed(seed)
    return _candidate_groups(
        model, tokenizer, prompts, chat, pad_id, stop_ids, k, max_new_tokens, temperature, top_p,
        batch_size, device,
    )  # fmt: skip


def _candidate_groups(
    model: Any, tokenizer: Any, prompts: list[Prompt], chat: bool, pad_id: int,
    stop_ids: Any, k: int, max_new_tokens: int, temperature: float, top_p: float,
    batch_size: int, device: str,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """:func:`generate_candidates`' sampling, batch by batch."""
    from rlhfkit.chat import render_prompt

    with packed_linears(model, rows=batch_size * k):  # packed once, for every batch
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            # 1. render (chat template with the generation prompt, or plain text), tokenize,
            #    left-pad
            texts = [render_prompt(tokenizer, p, chat) for p in batch]
            input_ids, attention_mask = encode_prompts(
                tokenizer, texts, pad_id, chat=chat
            )  # (B, T)
            # 2. sample K continuations per prompt, the K copies of a prompt side by side (position
            #    ids follow the attention mask, so a left-padded prompt reads the same positions as
            #    alone, RoPE models included)
            new_tokens = generate(
                model,
                input_ids.repeat_interleave(k, dim=0).to(device),
                attention_mask.repeat_interleave(k, dim=0).to(device),
                max_new_tokens,
                temperature,
                pad_id,
                stop_ids,
                top_p=top_p,
            ).tolist()  # (B * k, max_new_tokens)
            # 3. cut at the first stop token, decode, group K per prompt
            for i, prompt in enumerate(batch):
                responses = []
                for j in range(k):
                    ids = new_tokens[i * k + j]
                    stop = next((n for n, t in enumerate(ids) if t in stop_ids), len(ids))
                    text = tokenizer.decode(ids[:stop], skip_special_tokens=True)
                    responses.append({"id": f"r{j}", "text": text.strip()})
                yield {"prompt": prompt, "responses": responses}
