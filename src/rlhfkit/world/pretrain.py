"""Pretraining the world's base policy from scratch: a small GPT-2, fresh world text for every step,
AdamW with warm-up and cosine decay. :func:`rlhfkit.world.policy.build_base_policy` runs these steps
in order (``_train_and_save``); the order is part of the build, since torch's RNG draws the initial
weights and Python's the data."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit.world.sampling import policy_text, sample_example

if TYPE_CHECKING:
    from rlhfkit.world.policy import BaseBuildSettings

ProgressFn = Callable[[int, int, float], None]
"""``progress(step, total_steps, loss)``, called after every optimizer step."""


def new_gpt2(tokenizer: Any, s: BaseBuildSettings) -> Any:
    """A randomly initialised GPT-2 over ``tokenizer``'s vocabulary, seeded with ``s.seed``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=s.n_positions,
        n_embd=s.n_embd,
        n_layer=s.n_layer,
        n_head=s.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # No dropout: the data is an endless fresh stream, so there is nothing to overfit, and
        # dropout costs ~10% of the step time on CPU. Exact GELU is one kernel (gelu_new is five).
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu",
    )
    torch.manual_seed(s.seed)
    model = GPT2LMHeadModel(config)
    model.train()
    return model


def training_batches(tokenizer: Any, s: BaseBuildSettings) -> list[list[list[int]]]:
    """The token ids of every step's batch: fresh samples from the world (an endless source),
    drawn with ``random.Random(s.seed)``, which then shuffles the length-bucketed batches."""
    rng = random.Random(s.seed)
    n_texts = s.steps * s.batch_size
    texts = [policy_text(*sample_example(rng, dist=s.distribution)) for _ in range(n_texts)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return _length_bucketed_batches(ids, s.batch_size, rng)


def _length_bucketed_batches(
    ids: list[list[int]], batch_size: int, rng: random.Random, megabatch: int = 50
) -> list[list[list[int]]]:
    """Batches of similar lengths: sort each run of ``megabatch`` batches by length, cut, shuffle.

    Padding to the longest sequence of a random batch wastes about a third of the compute here
    (mean length ~50 tokens, mean batch maximum ~73); bucketing cuts that to a few percent.
    """
    batches: list[list[list[int]]] = []
    span = batch_size * megabatch
    for start in range(0, len(ids), span):
        chunk = sorted(ids[start : start + span], key=len)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def lr_at(step: int, s: BaseBuildSettings) -> float:
    """Linear warm-up over ``s.warmup_steps``, then cosine decay to 10% of the peak."""
    if step < s.warmup_steps:
        return s.learning_rate * (step + 1) / s.warmup_steps
    frac = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _adamw(model: Any, s: BaseBuildSettings) -> Any:
    """AdamW with weight decay on the matrices only (not on biases and norms)."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": s.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=s.learning_rate,
        betas=(0.9, 0.95),
    )


def _padded(batch: list[list[int]], pad: int) -> tuple[Any, Any, Any]:
    """``(input_ids, attention, targets)`` of sequences right-padded (positions start at 0), the
    targets being the next tokens, ``-100`` on padding."""
    import torch

    width = max(len(seq) for seq in batch)
    input_ids = torch.full((len(batch), width), pad)  # (B, T)
    attention = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for i, seq in enumerate(batch):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
    targets = input_ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)  # (B, T-1)
    return input_ids, attention, targets


def pretrain(
    model: Any,
    tokenizer: Any,
    batches: list[list[list[int]]],
    s: BaseBuildSettings,
    progress: ProgressFn | None,
) -> list[float]:
    """Train ``model`` in place for ``s.steps`` steps: next-token loss on every real token (prompt,
    response and the final EOS). Returns each step's loss."""
    import torch

    optimizer = _adamw(model, s)
    eos = tokenizer.eos_token_id
    losses: list[float] = []
    for step in range(s.steps):
        batch = [[*seq, eos] for seq in batches[step]]
        input_ids, attention, targets = _padded(batch, tokenizer.pad_token_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, s)
        logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
        logits = logits[:, :-1]  # (B, T-1, V)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, s.steps, losses[-1])
    return losses


def save_policy(model: Any, tokenizer: Any, out: Path) -> None:
    """Save as an ordinary model directory, with generation defaults that give world text (sample
    from the whole distribution, stop at EOS, pad with ``<pad>``)."""
    model.eval()
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.do_sample = True
    gen.top_k = 0
    gen.max_new_tokens = 128
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def loss_curve(losses: list[float]) -> list[dict[str, float]]:
    """The loss every 25 steps from step 10, each the mean of the last (up to) 10 steps."""
    return [
        {
            "step": i + 1,
            "loss": round(
                sum(losses[max(0, i - 9) : i + 1]) / len(losses[max(0, i - 9) : i + 1]), 4
            ),
        }
        for i in range(9, len(losses), 25)
    ]
