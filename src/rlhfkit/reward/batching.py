"""Reward-model batches: one element is a prompt with its K ranked responses, tokenized once.

Preferences become :class:`Item` s (token features, ranks, margin, weight); a batch concatenates
the responses of several items and carries each one's group id, so the loss compares only
responses of the same prompt. The held-out split is by prompt; the data order of each epoch is a
pure function of (seed, epoch), which is what makes an exact resume possible. With a causal-LM
reward model the tokens all of an item's responses start with (its prompt) can be forwarded once
(:func:`shared_prompt_rewards`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Item:
    """One training/eval prompt: its responses' token features and ranks (1 = best)."""

    features: list[dict[str, list[int]]]
    ranks: list[int]
    margin: float
    prefix: int = 0  # tokens every response starts with (see shared_prefix_length)
    weight: float = 1.0  # the record's weight in the loss (1 when it has none)


def distinct_prompts(rankings: list[Any]) -> str:
    """``"N prompts"``: rankings often share a prompt (several annotators, several groups)."""
    n = len({r.prompt for r in rankings})
    return f"{n} prompt" + ("" if n == 1 else "s")


def split_by_prompt(rankings: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out ``fraction`` of the distinct prompts (all their rankings), so no prompt is on both
    sides; returns ``(train, held_out)``. Deterministic in ``seed``. When every ranking shares one
    prompt, ``fraction`` of the rankings is held out instead (see :func:`split_description`)."""
    prompts = sorted({r.prompt for r in rankings})
    if fraction <= 0 or len(rankings) < 2:
        return list(rankings), []
    rng = random.Random(seed)
    if len(prompts) < 2:
        order = list(range(len(rankings)))
        rng.shuffle(order)
        n_eval = min(len(rankings) - 1, max(1, round(fraction * len(rankings))))
        held_idx = set(order[:n_eval])
        return (
            [r for i, r in enumerate(rankings) if i not in held_idx],
            [r for i, r in enumerate(rankings) if i in held_idx],
        )
    rng.shuffle(prompts)
    n_eval = min(len(prompts) - 1, max(1, round(fraction * len(prompts))))
    held = set(prompts[:n_eval])
    return [r for r in rankings if r.prompt not in held], [r for r in rankings if r.prompt in held]


def split_description(rankings: list[Any], fraction: float, data: str) -> str:
    """How :func:`split_by_prompt` held data out, for eval.json."""
    if fraction <= 0:
        return "none (--eval-split 0)"
    if len(rankings) < 2:
        return f"none: {data} has a single ranking, nothing to hold out"
    if len({r.prompt for r in rankings}) < 2:
        return f"{fraction:g} of {data} (by ranking: every ranking shares one prompt)"
    return f"{fraction:g} of {data} (by prompt)"


def prepare_items(
    rm: Any, rankings: list[Any], overlong: str, use_margin: bool
) -> tuple[list[Item], dict[str, int]]:
    """Tokenize every response once; apply the over-long policy; count what happened."""
    prompts = [r.model_prompt for r in rankings for _ in r.responses]
    texts = [resp.model_input for r in rankings for resp in r.responses]
    feats, lengths = rm.encode(prompts, texts)
    max_len = rm.settings.max_length
    counts = {"responses": len(texts), "overlong": 0, "dropped_responses": 0, "dropped_rankings": 0}
    items: list[Item] = []
    pos = 0
    for r in rankings:
        k = len(r.responses)
        f, n, ranks = feats[pos : pos + k], lengths[pos : pos + k], r.ranks()
        pos += k
        too_long = [x > max_len for x in n]
        counts["overlong"] += sum(too_long)
        if overlong == "drop" and any(too_long):
            keep = [i for i in range(k) if not too_long[i]]
            counts["dropped_responses"] += k - len(keep)
            f, ranks = [f[i] for i in keep], [ranks[i] for i in keep]
        if len(set(ranks)) < 2:  # no strictly ordered pair left
            counts["dropped_rankings"] += 1
            continue
        margin = float(r.margin) if (use_margin and r.margin is not None) else 0.0
        prefix = shared_prefix_length([x["input_ids"] for x in f])
        weight = 1.0 if r.weight is None else float(r.weight)
        items.append(Item(f, ranks, margin, prefix, weight))
    return items, counts


def collate_items(
    rm: Any, items: list[Item]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the responses of several prompts: model inputs (N, T), group ids, ranks (N,),
    and per-prompt margins (G,)."""
    batch = rm.collate([f for it in items for f in it.features])
    return batch, *group_tensors(items, batch["input_ids"].device)


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Number of leading tokens all ``sequences`` share (a ranking's prompt, as tokenized with each
    response), at most the shortest length − 1 so every sequence keeps a token of its own (the
    score is read at its last token). Found on the token ids, so it is right for any tokenizer and
    template (a merge across the prompt/response boundary just shortens it)."""
    n = min(len(x) for x in sequences) - 1
    first = sequences[0]
    p = 0
    while p < n and all(x[p] == first[p] for x in sequences[1:]):
        p += 1
    return max(p, 0)


def loss_weights(
    items: list[Item], batch_weight: float, parts: int, device: torch.device
) -> dict[str, Any]:
    """``grouped_ranking_loss`` weights for one micro-batch of a global batch split into ``parts``
    (processes × accumulation steps): each part divides by ``batch_weight / parts``, so that the
    average of the parts' gradients (all-reduce, accumulation) is that of the global batch's
    weighted mean ``Σ w ℓ / Σ w``, however its prompts were split."""
    weights = torch.tensor([it.weight for it in items], device=device)  # (G,)
    return {"weights": weights, "weight_total": batch_weight / parts}


def group_tensors(
    items: list[Item], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group ids (N,), ranks (N,) and per-prompt margins (G,) of concatenated ``items``."""
    group_ids = torch.tensor([g for g, it in enumerate(items) for _ in it.features])  # (N,)
    ranks = torch.tensor([x for it in items for x in it.ranks])  # (N,)
    margins = torch.tensor([it.margin for it in items], dtype=torch.float32)  # (G,)
    return group_ids.to(device), ranks.to(device), margins.to(device)


def can_share_prompt(model: Any, max_length: int | None = None) -> bool:
    """Whether :func:`shared_prompt_rewards` applies: a decoder-only sequence-classification model
    with the usual ``score`` head, called directly (not through a DDP wrapper, whose forward must
    run for gradients to be synchronised), whose key/value cache keeps every token of an input of
    ``max_length`` tokens (a sliding-window cache, as Mistral's or Gemma's, drops the oldest)."""
    from rlhfkit.reward.model import is_causal_lm

    cfg = getattr(model, "config", None)
    window = getattr(cfg, "sliding_window", None)
    sliding = window and getattr(cfg, "use_sliding_window", True) is not False
    if sliding and (max_length is None or window < max_length):
        return False
    return (
        cfg is not None
        and isinstance(getattr(model, "score", None), torch.nn.Linear)
        and getattr(model, "base_model", None) is not None
        and model.base_model is not model
        # the 4-D float mask it passes is read as-is by these two (not by flash-attention kernels)
        and getattr(cfg, "_attn_implementation", "sdpa") in ("sdpa", "eager")
        and is_causal_lm(cfg)
    )


def shared_prompt_rewards(model: Any, items: list[Item], pad_id: int) -> torch.Tensor:
    """Raw rewards ``(N,)`` of every response of ``items`` (in order), with gradients, forwarding
    each item's shared prefix once: the G prefixes (right-padded) in one forward that returns their
    key/value cache, the cache rows repeated for each item's responses, and the N suffixes in a
    second forward on that cache. In a causal model a prompt token never attends to a response
    token, so this is the same computation as N full forwards (equal up to float rounding); it
    skips (K − 1) · prefix tokens per item. Every ``item.prefix`` must be ≥ 1."""
    import inspect

    base, head = model.base_model, model.score
    dev = head.weight.device
    G = len(items)
    prefix = torch.tensor([it.prefix for it in items])  # (G,)
    group = torch.tensor([g for g, it in enumerate(items) for _ in it.features])  # (N,)
    P = int(prefix.max())
    pre_ids = torch.full((G, P), pad_id, dtype=torch.long)
    pre_mask = torch.zeros((G, P), dtype=torch.long)
    for g, it in enumerate(items):
        pre_ids[g, : it.prefix] = torch.tensor(it.features[0]["input_ids"][: it.prefix])
        pre_mask[g, : it.prefix] = 1
    suffixes = [f["input_ids"][it.prefix :] for it in items for f in it.features]
    N, S = len(suffixes), max(len(x) for x in suffixes)
    suf_ids = torch.full((N, S), pad_id, dtype=torch.long)
    for n, x in enumerate(suffixes):
        suf_ids[n, : len(x)] = torch.tensor(x)
    suf_len = torch.tensor([len(x) for x in suffixes])  # (N,)

    # 1. The prefixes: an ordinary right-padded forward that keeps its key/value cache.
    params = inspect.signature(base.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    out = base(input_ids=pre_ids.to(dev), attention_mask=pre_mask.to(dev), use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.batch_select_indices(group.to(dev))  # (G, …) -> (N, …): each response's prompt rows

    # 2. The suffixes on that cache. The mask is given in 4-D (N, 1, S, P + S) so that each
    # response sees exactly its own prompt's real tokens (not another prompt's padding) and its
    # own earlier tokens; padded suffix rows still see their prompt (no empty softmax row).
    dtype = head.weight.dtype
    allowed = torch.cat(
        [
            pre_mask[group].bool()[:, None, None, :].expand(N, 1, S, P),  # (N, 1, S, P)
            torch.ones(S, S, dtype=torch.bool).tril()[None, None].expand(N, 1, S, S),
        ],
        dim=-1,
    )  # (N, 1, S, P + S)
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    # Each response continues at its own prompt's length (absolute positions, as in one forward);
    # padded positions are clamped into the model's range (their outputs are never read).
    limit = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", P + S
    )
    position_ids = (prefix[group][:, None] + torch.arange(S)[None]).clamp(max=limit - 1)  # (N, S)
    hidden = base(
        input_ids=suf_ids.to(dev),
        attention_mask=mask.to(dev),
        position_ids=position_ids.to(dev),
        use_cache=True,
        **{cache_kw: cache},
    ).last_hidden_state  # (N, S, H)
    last = hidden[torch.arange(N, device=dev), (suf_len - 1).to(dev)]  # (N, H)
    return head(last).squeeze(-1).float()  # (N,)


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    """The shuffled order of the ``n`` training prompts in ``epoch`` (same on every process, and
    recomputable on resume — the data position is just (epoch, step))."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def batch_indices(order: list[int], step_in_epoch: int, batch_size: int) -> list[int]:
    """Global batch ``step_in_epoch`` of an epoch; the last one is filled up from the start of the
    order so every batch has ``batch_size`` prompts (equal shares across processes)."""
    start = step_in_epoch * batch_size
    idx = order[start : start + batch_size]
    if len(idx) < batch_size:
        idx = idx + order[: batch_size - len(idx)]
    return idx
