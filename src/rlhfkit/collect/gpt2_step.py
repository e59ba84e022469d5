"""GPT-2's decoding step without ``transformers``' per-call machinery, for small models on a CPU.

A decoding step of the demo's 3 × 96 GPT-2 for 32 rows takes about 2 ms, and half of it is Python:
the model's forward builds a 4-D attention mask, checks its arguments, updates a ``DynamicCache``
object, wraps its outputs in dataclasses, through a dozen decorators. :class:`GPT2DecodeStep` runs
the same layers of the same model — every submodule called as the model calls it (``ln_1``,
``c_attn``, ``c_proj``, ``mlp``, ...), so packed weights, a fused activation or a user's
replacement of a layer still apply — with the keys and values written in place into one buffer per
layer, allocated once for the whole call (``DynamicCache`` concatenates, a copy of the whole cache
per step; attention reads a view of the buffer and gives the same bits), and the attention mask
built the way ``transformers``' SDPA mask is. On the demo's policy it samples 1.1–1.6× faster
(docs/benchmarks.md, "A leaner GPT-2 decoding step"); the buffer sampled a ~20M GPT-2 1.07-1.09×
faster than concatenating on two threads of an Intel Xeon ("Sampling on an Intel Xeon (session
24)").

It must give the model's own logits bit for bit, so that a seed gives the same samples on either
path. :func:`decode_step` therefore takes it only for a plain ``GPT2LMHeadModel`` with SDPA
attention, no cross-attention and no active dropout, and only once it has matched the model's own
forward exactly on a padded and an unpadded batch, prefill and two decoding steps (checked once
per model object; a later ``transformers`` whose GPT-2 computes otherwise falls back to the model's
forward by itself). ``RLHFKIT_GPT2_STEP=0`` switches it off.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import torch
import torch.nn.functional as F

ENV = "RLHFKIT_GPT2_STEP"

_VERIFIED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
"""Per model object: whether the lean step matched its forward (checked on first use)."""


def _enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def supported(model: Any) -> bool:
    """Whether ``model`` is a GPT-2 this step knows how to run: exactly ``GPT2LMHeadModel`` (not a
    subclass, a PEFT or a distributed wrapper), on one device without Accelerate's hooks (a
    ``device_map`` model moves tensors between its blocks in hooks this step would not call), SDPA
    attention, no cross-attention, no dropout that would act (eval mode, or every probability 0, as
    PPO sets it)."""
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    if type(model) is not GPT2LMHeadModel:
        return False
    cfg = model.config
    if getattr(cfg, "_attn_implementation", None) != "sdpa" or cfg.add_cross_attention:
        return False
    if any(not isinstance(getattr(b.attn, "scaling", None), float) for b in model.transformer.h):
        return False
    if any(hasattr(m, "_hf_hook") for m in model.modules()):
        return False
    if len({p.device for p in model.parameters()}) > 1:
        return False
    dropout = torch.nn.modules.dropout._DropoutNd
    return not model.training or all(m.p == 0 for m in model.modules() if isinstance(m, dropout))


class GPT2DecodeStep:
    """One forward of a ``GPT2LMHeadModel`` over new tokens, with its own key/value cache: the
    logits of each row's last position, as ``model(input_ids, attention_mask=…, position_ids=…,
    cache=…, logits_to_keep=1)`` returns them.

    ``attention_mask`` (B, L) covers the cached and the new tokens (1 = real, left padding only);
    ``position_ids`` (B, T) are the new tokens' positions."""

    def __init__(self, model: Any, capacity: int = 0) -> None:
        self.model = model
        self.blocks = list(model.transformer.h)
        self.capacity = capacity  # positions the caches are first allocated for; they grow past it
        self.length = 0  # positions cached
        # per layer (B, capacity, 2E): each position's keys then values, as c_attn lays them out,
        # written in place; attention reads a view of the first `length` positions
        self.cache: list[torch.Tensor] = []

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        gpt2 = self.model.transformer
        h = gpt2.wte(input_ids) + gpt2.wpe(position_ids)  # (B, T, E)
        B, T, E = h.shape
        start, end = self.length, self.length + T
        if not self.cache or end > self.cache[0].shape[1]:
            self._grow(h, end)
        mask = _sdpa_mask(attention_mask, T)
        for block, cache in zip(self.blocks, self.cache, strict=True):
            attn = block.attn
            residual = h
            x = attn.c_attn(block.ln_1(h))  # (B, T, 3E): queries, keys, values
            cache[:, start:end].copy_(x[..., E:])
            q = x[..., :E].view(B, T, -1, attn.head_dim).transpose(1, 2)  # (B, heads, T, d)
            k, v = (
                cache[:, :end, part].view(B, end, -1, attn.head_dim).transpose(1, 2)
                for part in (slice(0, E), slice(E, 2 * E))
            )  # (B, heads, end, d), strided views: no copy of the cache per step
            a = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=0.0, scale=attn.scaling,
                is_causal=T > 1 and mask is None,
            )  # fmt: skip
            a = a.transpose(1, 2).contiguous().reshape(B, T, E).contiguous()
            h = attn.c_proj(a) + residual
            h = h + block.mlp(block.ln_2(h))
        self.length = end
        h = gpt2.ln_f(h[:, -1:])
        return self.model.lm_head(h)[:, -1]  # (B, V)

    def _grow(self, like: torch.Tensor, needed: int) -> None:
        """Caches for at least ``needed`` positions (the capacity, else twice what they held),
        keeping what they hold."""
        B, _, E = like.shape
        held = self.cache[0].shape[1] if self.cache else 0
        size = max(needed, self.capacity, 2 * held)
        grown = [like.new_empty(B, size, 2 * E) for _ in self.blocks]
        for new, old in zip(grown, self.cache, strict=False):  # none held at first
            new[:, : self.length].copy_(old[:, : self.length])
        self.cache = grown


def _sdpa_mask(attention_mask: torch.Tensor, q_length: int) -> torch.Tensor | None:
    """The boolean (B, 1, T, L) mask ``transformers`` gives SDPA for the last ``q_length`` of L
    positions (causal and not padding), or None where it gives none: no padding, and one new
    token or none cached (SDPA's ``is_causal`` then does the work)."""
    L = attention_mask.shape[1]
    if bool(attention_mask.all()) and (q_length == 1 or q_length == L):
        return None
    device = attention_mask.device
    kv = torch.arange(L, device=device)
    q = torch.arange(L - q_length, L, device=device)
    causal = kv[None, :] <= q[:, None]  # (T, L)
    return causal[None, None] & attention_mask.bool()[:, None, None, :]


def decode_step(model: Any, reference: Any, capacity: int = 0) -> Any:
    """The step :func:`rlhfkit.collect.generate.generate` runs ``model`` with: a
    :class:`GPT2DecodeStep` (caches first allocated for ``capacity`` positions) where it is
    supported, switched on and matches the model's own forward, else ``reference(model)`` (the
    model's forward through its own cache)."""
    if not (_enabled() and supported(model)):
        return reference(model)
    verdict = _VERIFIED.get(model)
    if verdict is None:
        verdict = _VERIFIED[model] = matches_forward(model, reference)
    return GPT2DecodeStep(model, capacity) if verdict else reference(model)


def matches_forward(model: Any, reference: Any) -> bool:
    """Whether :class:`GPT2DecodeStep` gives exactly the logits of ``reference(model)`` on two
    batches (two rows with one left-padded; three unpadded rows): prefill, then two tokens. A lean
    step that raises does not match (the model's own forward then runs, and says what is wrong if
    anything is)."""
    try:
        return _matches_forward(model, reference)
    except Exception:  # any failure of ours means: use the model's forward
        return False


@torch.no_grad()
def _matches_forward(model: Any, reference: Any) -> bool:
    from rlhfkit.collect.generate import position_ids_from_mask  # (it imports this module)

    device = model.transformer.wte.weight.device
    vocab = model.config.vocab_size
    for ids, mask in (
        (torch.tensor([[3, 5, 7, 2], [0, 0, 4, 6]]), torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])),
        (torch.tensor([[1, 2], [3, 4], [5, 6]]), torch.ones(3, 2, dtype=torch.long)),
    ):
        ids, mask = (ids % vocab).to(device), mask.to(device)
        positions = position_ids_from_mask(mask)
        lean, full = GPT2DecodeStep(model), reference(model)
        tokens = ids
        for _ in range(3):  # the prompt, then two tokens
            a, b = lean(tokens, mask, positions), full(tokens, mask, positions)
            if not torch.equal(a, b):
                return False
            tokens = a.argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones_like(tokens)], 1)
            positions = positions[:, -1:] + 1
    return True
