"""Ranking-native reward-model training (InstructGPT, Ouyang et al. 2022, §3.5).

A batch element is one prompt with its K ranked responses. Every response of the batch is forwarded
exactly once, and the loss is :func:`rlhfkit.losses.grouped_ranking_loss`: for each prompt the mean
Bradley-Terry loss ``−log σ(r_w − r_l − margin)`` over its K(K−1)/2 strictly ordered pairs (ties give
no pair), averaged over prompts. Expanding a ranking into independent pairs (TRL) forwards each
response K−1 times and, shuffled, overfits within one epoch (InstructGPT); the gradient here equals
that of the pairwise-expanded loss grouped by prompt, at K forwards instead of K(K−1).

``train_reward_model(config)`` reads top to bottom:
1. data (+ held-out split), 2. model, 3. tokenize once (truncate or drop over-long items),
4. optimizer / schedule / Accelerate, 5. resume, 6. train loop, 7. normalize, 8. evaluate, 9. save.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rlhfkit.errors import ConfigError, DataError
from rlhfkit.loading import fuse_activations
from rlhfkit.losses import grouped_ranking_loss
from rlhfkit.runtime.checkpoint import TrainingStopped, remove_stale_temporaries
from rlhfkit.runtime.distributed import make_accelerator
from rlhfkit.runtime.faults import inject_nan, kill_point
from rlhfkit.runtime.io import (
    MetricsLogger,
    atomic_dir,
    clear_previous_run,
    recover_interrupted_dir,
    write_json,
)
from rlhfkit.runtime.optim import adamw
from rlhfkit.runtime.progress import progress_bar

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"


@dataclass
class RewardConfig:
    """Train a reward model on rankings (or pairs): one forward per response, Bradley-Terry loss
    over every ordered pair of a prompt's responses."""

    model: str
    """backbone or reward model: a directory or hub name (causal LM, or an encoder such as MiniLM)"""
    data: str
    """training preferences: native rankings, TRL pairs, HH-RLHF or UltraFeedback (JSONL/Parquet/dataset dir)"""
    out: str
    """output directory: the reward model (loadable by AutoModelForSequenceClassification), eval.json, metrics.jsonl"""
    eval_data: str | None = None
    """held-out preferences for evaluation (default: hold out --eval-split of the training prompts)"""
    eval_split: float = 0.05
    """fraction of training prompts held out when --eval-data is not given (0 = no evaluation)"""
    format: str = "auto"
    """data format: auto, rankings, pairs, hh, ultrafeedback"""
    skip_invalid: bool = False
    """skip invalid records (counted in the report) instead of stopping at the first one"""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """conversational data: render each (prompt, response) with the backbone's chat template (auto:
    when the data has message lists and the tokenizer a template; always: plain prompts too, as one
    user message; never: plain "Role: content" text); stored with the reward model (docs/models.md)"""
    template: str | None = None
    """causal LMs: input text with {prompt} and {response} (default "{prompt}{response}", then EOS); encoders use a text pair"""
    max_length: int = 512
    """max tokens per (prompt, response); capped by the model's positions"""
    overlong: Literal["truncate", "drop"] = "truncate"
    """over-long items: truncate from the left (the response end is kept) or drop the response from its ranking"""
    epochs: int = 1
    """passes over the training rankings; one is usually best (more overfits: InstructGPT, Ziegler et al.)"""
    batch_size: int = 32
    """prompts (rankings) per optimizer step, global: each of N processes takes batch_size / N"""
    gradient_accumulation_steps: int = 1
    """split each process's share of a batch into this many micro-batches (less memory, same result)"""
    learning_rate: float = 3e-5
    """peak AdamW learning rate"""
    lr_scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """learning-rate decay after warmup: linear to 0, cosine to 0, or constant"""
    warmup_ratio: float = 0.0
    """fraction of the optimizer steps spent warming the learning rate up from 0"""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norm weights)"""
    adam_eps: float = 1e-8
    """AdamW epsilon"""
    max_grad_norm: float = 1.0
    """clip the global gradient norm to this (0 = no clipping)"""
    use_margin: bool = True
    """use a record's margin (TRL's "margin" field) in the loss: −log σ(r_w − r_l − margin)"""
    center_rewards_coefficient: float = 0.0
    """add coef · mean(r²) over the batch's responses to keep rewards centred at 0 (TRL, Eisenstein et al. 2023; 0.01 is typical)"""
    normalize: bool = True
    """after training, set gain/bias so scores of the reference responses have mean 0, std 1 (lm-human-preferences)"""
    normalize_data: str | None = None
    """reference responses for normalization (preferences or prompt/response JSONL; default: the training responses)"""
    normalize_samples: int = 2048
    """at most this many reference responses (a random subset) set the normalization"""
    eval_batch_size: int = 64
    """responses per forward pass when evaluating / normalizing"""
    share_prompt: bool = True
    """causal-LM reward models: forward the tokens all K responses of a ranking start with (its
    prompt) once and the K responses on its key/value cache, instead of the prompt K times (the same
    rewards and gradients, fewer FLOPs; single process only, off for encoders)"""
    seed: int = 0
    """random seed: head init, data order, held-out split"""
    logging_steps: int = 10
    """write rm/* metrics to metrics.jsonl every this many optimizer steps (means over the interval)"""
    save_every: int = 0
    """save a resumable checkpoint every this many optimizer steps (0 = only at each epoch's end)"""
    keep_checkpoints: int = 1
    """how many of the newest checkpoints to keep in OUT/checkpoints (0 = keep all)"""
    max_bad_steps: int = 3
    """stop after this many optimizer steps in a row with a non-finite loss or gradient (each one
    is skipped, never applied); the last good checkpoint is kept"""
    resume: bool = False
    """continue from the newest checkpoint in OUT/checkpoints (same data and settings required)"""
    overwrite: bool = False
    """start afresh in an OUT that holds a previous run (its metrics and checkpoints are removed)"""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """autocast on GPUs; keep "no" on CPU (bf16/fp16 are emulated and ~100× slower there)"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (
                0 <= self.warmup_ratio < 1,
                f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}",
            ),
            (0 <= self.eval_split < 1, f"eval_split must be in [0, 1), got {self.eval_split}"),
            (self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}"),
            (self.logging_steps >= 1, "logging_steps must be >= 1"),
            (self.save_every >= 0, "save_every must be >= 0"),
            (self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0"),
            (self.max_bad_steps >= 1, "max_bad_steps must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.normalize_samples >= 2, "normalize_samples must be >= 2"),
            (self.center_rewards_coefficient >= 0, "center_rewards_coefficient must be >= 0"),
            (self.overlong in ("truncate", "drop"), "overlong must be 'truncate' or 'drop'"),
            (self.lr_scheduler in ("linear", "cosine", "constant"), "bad lr_scheduler"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


# How a run trained before the setting existed (plain-text data reads the same under "auto").
_SETTINGS_BEFORE_THEY_EXISTED = {"chat_template": "auto"}

# Fields that must not change between a run and its --resume (the rest may, e.g. logging).
_RESUME_KEYS = (
    "model", "data", "eval_data", "eval_split", "format", "skip_invalid", "template", "max_length",
    "chat_template",
    "overlong", "epochs", "batch_size", "learning_rate", "lr_scheduler", "warmup_ratio",
    "weight_decay", "adam_eps", "max_grad_norm", "use_margin", "center_rewards_coefficient", "seed",
)  # fmt: skip


@dataclass
class _Item:
    """One training/eval prompt: its responses' token features and ranks (1 = best)."""

    features: list[dict[str, list[int]]]
    ranks: list[int]
    margin: float
    prefix: int = 0  # tokens every response starts with (see shared_prefix_length)


# ------------------------------------------------------------------------------------ helpers


def _distinct_prompts(rankings: list[Any]) -> str:
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


def _prepare_items(
    rm: Any, rankings: list[Any], overlong: str, use_margin: bool
) -> tuple[list[_Item], dict[str, int]]:
    """Tokenize every response once; apply the over-long policy; count what happened."""
    prompts = [r.model_prompt for r in rankings for _ in r.responses]
    texts = [resp.model_input for r in rankings for resp in r.responses]
    feats, lengths = rm.encode(prompts, texts)
    max_len = rm.settings.max_length
    counts = {"responses": len(texts), "overlong": 0, "dropped_responses": 0, "dropped_rankings": 0}
    items: list[_Item] = []
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
        items.append(_Item(f, ranks, margin, shared_prefix_length([x["input_ids"] for x in f])))
    return items, counts


def _collate_items(
    rm: Any, items: list[_Item]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate the responses of several prompts: model inputs (N, T), group ids, ranks (N,),
    and per-prompt margins (G,)."""
    batch = rm.collate([f for it in items for f in it.features])
    return batch, *_group_tensors(items, batch["input_ids"].device)


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


def _group_tensors(
    items: list[_Item], device: torch.device
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
    from rlhfkit.models import is_causal_lm

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


def shared_prompt_rewards(model: Any, items: list[_Item], pad_id: int) -> torch.Tensor:
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


def pair_metrics(scores: list[torch.Tensor], ranks: list[list[int]]) -> dict[str, float]:
    """Held-out metrics from each prompt's response scores and ranks.

    accuracy: share of strictly ordered pairs with r_w > r_l (strict: a tied score is wrong; tied
    ranks give no pair); margin: mean r_w − r_l; loss: mean over prompts of the mean pair loss;
    top1_accuracy: share of prompts with one best response where it scores highest.
    """
    correct = n_pairs = 0
    margin_sum = 0.0
    losses, top1 = [], []
    for s, rk in zip(scores, ranks, strict=True):
        r = torch.as_tensor(rk)
        better = r.unsqueeze(1) < r.unsqueeze(0)  # (K, K): [i, j] = i ranked above j
        w, lo = better.nonzero(as_tuple=True)
        if w.numel() == 0:
            continue
        diff = (s[w] - s[lo]).double()  # (P,)
        correct += int((diff > 0).sum())
        n_pairs += diff.numel()
        margin_sum += float(diff.sum())
        losses.append(float(-torch.nn.functional.logsigmoid(diff).mean()))
        if int((r == r.min()).sum()) == 1:
            best = int(r.argmin())
            top1.append(float(bool((s[best] > torch.cat([s[:best], s[best + 1 :]])).all())))
    all_scores = torch.cat(scores).double() if scores else torch.zeros(0, dtype=torch.float64)
    return {
        "accuracy": correct / n_pairs if n_pairs else float("nan"),
        "margin": margin_sum / n_pairs if n_pairs else float("nan"),
        "loss": sum(losses) / len(losses) if losses else float("nan"),
        "top1_accuracy": sum(top1) / len(top1) if top1 else float("nan"),
        "reward_mean": float(all_scores.mean()) if all_scores.numel() else float("nan"),
        "reward_std": float(all_scores.std()) if all_scores.numel() > 1 else float("nan"),
        "n_rankings": len(scores),
        "n_pairs": n_pairs,
    }


def _score_sharded(
    rm: Any, accelerator: Any, features: list[dict[str, list[int]]], batch_size: int
) -> torch.Tensor:
    """Raw scores of already-tokenized inputs, each process scoring every N-th one; gathered."""
    from accelerate.utils import gather_object

    mine = list(range(accelerator.process_index, len(features), accelerator.num_processes))
    mine.sort(key=lambda i: len(features[i]["input_ids"]))  # batch similar lengths together
    pairs: list[tuple[int, float]] = []
    was_training = rm.model.training
    rm.model.eval()
    with torch.no_grad():
        for s in range(0, len(mine), batch_size):
            idx = mine[s : s + batch_size]
            out = rm.raw_rewards(rm.collate([features[i] for i in idx])).cpu().tolist()
            pairs.extend(zip(idx, out, strict=True))
    rm.model.train(was_training)
    if accelerator.num_processes > 1:
        pairs = gather_object(pairs)
    out = torch.empty(len(features))
    for i, v in pairs:
        out[i] = v
    return out


def evaluate(
    rm: Any, items: list[_Item], accelerator: Any, batch_size: int = 64
) -> dict[str, float]:
    """Score every response of ``items`` once and compute :func:`pair_metrics`.

    ``loss`` uses the raw scores (the quantity training minimised, comparable with ``rm/loss``);
    ``margin`` and ``reward_mean``/``reward_std`` use the normalized scores that ``score()`` returns
    (so a margin reads in reference standard deviations); ``raw_margin`` is the raw one.
    """
    feats = [f for it in items for f in it.features]
    raw = _score_sharded(rm, accelerator, feats, batch_size)
    ranks = [it.ranks for it in items]

    def per_prompt(scores: torch.Tensor) -> list[torch.Tensor]:
        bounds = torch.tensor([0] + [len(it.features) for it in items]).cumsum(0).tolist()
        return [scores[a:b] for a, b in itertools.pairwise(bounds)]

    raw_m = pair_metrics(per_prompt(raw), ranks)
    res = pair_metrics(per_prompt(raw * rm.settings.gain + rm.settings.bias), ranks)
    res["loss"] = raw_m["loss"]
    res["raw_margin"] = raw_m["margin"]
    return res


def _read_reference(path: str, fmt: str) -> tuple[list[Any], list[Any]]:
    """Prompt/response pairs for normalization: preferences (every response) or records with
    ``prompt`` and ``response`` fields."""
    from rlhfkit.runtime.io import iter_jsonl

    p = Path(path)
    if p.suffix == ".jsonl" and p.is_file():
        first = next(iter_jsonl(p), None)
        if first is not None and isinstance(first[1], dict) and "response" in first[1]:
            from rlhfkit.data.candidates import read_response_rows

            rows = read_response_rows(p)
            return [r.prompt for r in rows], [r.response for r in rows]
    from rlhfkit.data import read_preferences

    rankings = read_preferences(p, format=fmt)
    return (
        [r.model_prompt for r in rankings for _ in r.responses],
        [x.model_input for r in rankings for x in r.responses],
    )


def _fingerprint(config: RewardConfig) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    return {k: d[k] for k in _RESUME_KEYS}


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step-") and (p / TRAINER_STATE).is_file():
            try:
                found.append((int(p.name[5:]), p))
            except ValueError:
                continue
    return sorted(found)


def _save_checkpoint(
    accelerator: Any, out: Path, step: int, state: dict[str, Any], keep: int
) -> Path:
    """Model, optimizer, scheduler and RNG states (``accelerator.save_state``) + trainer state
    (step, epoch, config fingerprint), built under a temporary name and renamed into place."""
    root = out / CHECKPOINTS
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        remove_stale_temporaries(out)  # what a save killed half-way left behind
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process writes its own RNG state file
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        kill_point("checkpoint-save", step)  # crash tests: files half there, nothing renamed
        write_json(tmp / TRAINER_STATE, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep > 0:
            for _, old in _checkpoints(out)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines logged after ``last_step`` (a crashed run's tail) before resuming."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash
        if not isinstance(rec.get("step"), int) or rec["step"] <= last_step:
            keep.append(line)
    from rlhfkit.runtime.io import atomic_open

    with atomic_open(path) as f:
        f.write("".join(x + "\n" for x in keep))


def _save_final(rm: Any, out: Path, extra_json: dict[str, Any]) -> None:
    """Replace OUT atomically with the model + tokenizer + ``extra_json`` files, carrying over the
    run's other files (metrics.jsonl, checkpoints/) by hard link, so that a kill at any moment
    leaves the old OUT or the new one, never a mix."""
    with atomic_dir(out) as tmp:
        rm.save_pretrained(tmp)
        for name, obj in extra_json.items():
            write_json(tmp / name, obj)
        if out.is_dir():
            for entry in out.iterdir():
                if (tmp / entry.name).exists():
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, tmp / entry.name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(entry, tmp / entry.name)


def _link_or_copy(src: Any, dst: Any) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _log(enabled: bool, msg: str) -> None:
    if enabled:
        print(f"rlhfkit train-rm: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ trainer


def train_reward_model(config: RewardConfig) -> dict[str, Any]:
    """Train, normalize, evaluate and save a reward model; returns the eval results (eval.json)."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from rlhfkit.data import read_preferences
    from rlhfkit.loading import check_model_source
    from rlhfkit.models import RewardModel

    check_model_source(config.model, "--model")  # before anything is read or written
    accelerator = make_accelerator(mixed_precision=config.mixed_precision)
    main = accelerator.is_main_process
    say = lambda msg: _log(main, msg)  # noqa: E731
    out = Path(config.out)
    n_proc = accelerator.num_processes
    accum = config.gradient_accumulation_steps
    if config.batch_size % (n_proc * accum):
        raise ConfigError(
            f"batch_size {config.batch_size} must be divisible by processes × "
            f"gradient_accumulation_steps = {n_proc} × {accum} = {n_proc * accum}"
        )
    micro = config.batch_size // (n_proc * accum)  # prompts per forward on each process

    # A kill while the final save replaced OUT may have left only the previous OUT aside.
    recover_interrupted_dir(out)
    if config.resume and not _checkpoints(out):
        raise ConfigError(
            f"{out}: --resume given but there is no checkpoint in {out / CHECKPOINTS}"
        )
    # Refuse to mix two runs in one OUT.
    clear_previous_run(
        out, ("metrics.jsonl", CHECKPOINTS),
        resume=config.resume, overwrite=config.overwrite, delete=main,
    )  # fmt: skip
    accelerator.wait_for_everyone()

    # 1. Data: training rankings and the held-out set (by prompt, so no prompt leaks).
    train_pref = read_preferences(
        config.data, format=config.format, skip_invalid=config.skip_invalid
    )
    say(train_pref.report())
    if config.eval_data is not None:
        eval_pref = read_preferences(
            config.eval_data, format=config.format, skip_invalid=config.skip_invalid
        )
        say(eval_pref.report())
        train_rankings, eval_rankings = list(train_pref), list(eval_pref)
    else:
        train_rankings, eval_rankings = split_by_prompt(
            list(train_pref), config.eval_split, config.seed
        )

    # 2. Model: head init N(0, 1/√(d+1)) is random, so seed first (same on every process).
    set_seed(config.seed)
    conversational = any(r.is_conversational for r in train_rankings + eval_rankings)
    rm = RewardModel.from_pretrained(
        config.model,
        template=config.template,
        max_length=config.max_length,
        chat_template=config.chat_template,
        conversational=conversational,
    )
    if rm.settings.input_format == "chat":
        say(
            "conversations are rendered with the model's chat template (--chat-template never: plain text)"
        )
    # GPT-2's Python GELU -> torch's kernel for the same function (faster, less memory).
    fuse_activations(rm.model)
    rm.to(accelerator.device)

    # 3. Tokenize every response once; over-long items truncated from the left or dropped.
    train_items, counts = _prepare_items(rm, train_rankings, config.overlong, config.use_margin)
    eval_items, eval_counts = _prepare_items(rm, eval_rankings, config.overlong, config.use_margin)
    if not train_items:
        raise DataError("no training ranking with an ordered pair left", config.data)
    verb = "truncated" if config.overlong == "truncate" else "dropped"
    if counts["overlong"] or eval_counts["overlong"]:
        say(
            f"{counts['overlong']} training and {eval_counts['overlong']} eval responses are longer "
            f"than {rm.settings.max_length} tokens: {verb}"
            + (
                f" ({counts['dropped_rankings']} rankings left without a pair)"
                if counts["dropped_rankings"]
                else ""
            )
        )
    steps_per_epoch = math.ceil(len(train_items) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    pairs_per_epoch = sum(_n_pairs(it.ranks) for it in train_items)
    say(
        f"{len(train_items)} training rankings of {_distinct_prompts(train_rankings)} "
        f"({sum(len(it.ranks) for it in train_items)} responses, {pairs_per_epoch} ordered pairs), "
        f"{len(eval_items)} held out ({_distinct_prompts(eval_rankings)}); {total_steps} "
        f"steps of {config.batch_size} rankings on {n_proc} process(es)"
    )

    # 4. Optimizer, schedule, Accelerate. The scheduler is stepped once per optimizer step and is
    # not passed to prepare() (which would step it once per process); it is checkpointed instead.
    decay, no_decay = [], []
    for name, p in rm.model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = adamw(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        eps=config.adam_eps,
    )
    scheduler = get_scheduler(
        "constant_with_warmup" if config.lr_scheduler == "constant" else config.lr_scheduler,
        optimizer,
        num_warmup_steps=round(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    model, optimizer = accelerator.prepare(rm.model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    model.train()
    # Each ranking's prompt forwarded once (the same rewards; see shared_prompt_rewards).
    share_prompt = (
        config.share_prompt
        and n_proc == 1
        and rm.settings.input_format == "template"
        and accelerator.unwrap_model(model) is model
        and can_share_prompt(model, rm.settings.max_length)
    )
    pad_id = rm.tokenizer.pad_token_id

    # 5. Resume: model/optimizer/scheduler/RNG from the newest checkpoint; the data position is
    # (epoch, step) because each epoch's order is a pure function of (seed, epoch).
    start_step = 0
    bad_in_a_row = nonfinite_total = skipped_in_interval = 0
    last_good: str | None = None
    if config.resume:
        step, ckpt = _checkpoints(out)[-1]
        state = json.loads((ckpt / TRAINER_STATE).read_text(encoding="utf-8"))
        # A setting added after the checkpoint was written: the value that run trained with.
        saved = {**_SETTINGS_BEFORE_THEY_EXISTED, **state["config"]}
        changed = {
            k: (saved.get(k), v) for k, v in _fingerprint(config).items() if saved.get(k) != v
        }
        saved_world = state.get("world_size", 1)
        if saved_world != n_proc:
            changed["processes"] = (saved_world, n_proc)
        if changed:
            diff = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"{ckpt}: cannot resume with changed settings ({diff})")
        if state["n_train"] != len(train_items):
            raise ConfigError(
                f"{ckpt}: the training data changed ({state['n_train']} -> {len(train_items)} prompts)"
            )
        accelerator.load_state(str(ckpt))
        start_step = step
        bad_in_a_row = int(state.get("bad_in_a_row", 0))
        nonfinite_total = int(state.get("nonfinite_total", 0))
        last_good = str(ckpt)
        if main:
            _truncate_metrics(out / "metrics.jsonl", step)
        say(f"resumed from {ckpt} (step {step} of {total_steps})")
    out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    # 6. Train. Each step: the global batch of prompts, this process's share, split into
    # micro-batches; all responses of a micro-batch go through the model in one forward.
    logger = MetricsLogger(out / "metrics.jsonl", enabled=main)
    sums = torch.zeros(
        6, device=accelerator.device
    )  # loss·G, G, correct, pairs, margin·P, responses
    t_start, pairs_done = time.perf_counter(), 0.0
    last_logged = start_step
    progress, task = progress_bar("train-rm", total_steps, start_step, main and config.progress)
    with progress:
        for step in range(start_step, total_steps):
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            order = epoch_order(len(train_items), epoch, config.seed)
            glob = batch_indices(order, step_in_epoch, config.batch_size)
            share = glob[
                accelerator.process_index * micro * accum : (accelerator.process_index + 1)
                * micro
                * accum
            ]
            local_finite = True
            step_sums = torch.zeros_like(sums)
            for m in range(accum):
                items = [train_items[i] for i in share[m * micro : (m + 1) * micro]]
                sync = m == accum - 1
                with nullcontext() if sync else accelerator.no_sync(model):
                    if share_prompt and all(it.prefix > 0 for it in items):
                        group_ids, ranks, margins = _group_tensors(items, accelerator.device)
                        with accelerator.autocast():
                            rewards = shared_prompt_rewards(model, items, pad_id)  # (N,)
                    else:
                        batch, group_ids, ranks, margins = _collate_items(rm, items)
                        with accelerator.autocast():
                            rewards = rm.raw_rewards(batch, model=model)  # (N,)
                    loss, stats = grouped_ranking_loss(
                        rewards, group_ids, ranks, margins if config.use_margin else None
                    )
                    if config.center_rewards_coefficient > 0:
                        loss = loss + config.center_rewards_coefficient * (rewards**2).mean()
                    if inject_nan("loss", step + 1):
                        loss = loss * float("nan")
                    local_finite &= bool(torch.isfinite(loss))
                    # backward even on a non-finite loss: every process must join the all-reduce
                    accelerator.backward(loss / accum)
                g, p = float(len(items)), float(stats["pairs"])
                step_sums += torch.tensor(
                    [
                        loss.item() * g,
                        g,
                        float(stats["accuracy"]) * p,
                        p,
                        float(stats["margin"]) * p,
                        rewards.numel(),
                    ],
                    device=sums.device,
                )
            grad_norm = (
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                if config.max_grad_norm > 0
                else None
            )
            # A non-finite loss or gradient on any process skips the step on every process (the
            # gradients are all-reduced, so one NaN poisons them all): weights and optimizer
            # moments stay as they were; the data position and the schedule move on.
            # (The clipped norm is non-finite exactly when a gradient is: one check instead of
            # one per parameter tensor.)
            finite = local_finite and (
                bool(torch.isfinite(grad_norm))
                if grad_norm is not None
                else all(
                    torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
                )
            )
            flag = torch.tensor(float(finite), device=accelerator.device)
            if accelerator.reduce(flag, reduction="sum").item() < n_proc:
                bad_in_a_row += 1
                nonfinite_total += 1
                skipped_in_interval += 1
                grad_norm = None
                _log(main, f"step {step + 1}: non-finite loss or gradient; optimizer step skipped")
            else:
                optimizer.step()
                bad_in_a_row = 0
                sums += step_sums
                kill_point("update", step + 1)  # crash tests: weights changed, nothing saved
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if bad_in_a_row >= config.max_bad_steps:
                raise TrainingStopped(
                    f"{bad_in_a_row} optimizer steps in a row had a non-finite loss or gradient "
                    "(none was applied); stopping. Last good checkpoint: "
                    + (last_good or f"none was saved (use --save-every); {out} was left as it was")
                )

            if done % config.logging_steps == 0 or done == total_steps:
                tot = accelerator.reduce(sums, reduction="sum")
                elapsed = time.perf_counter() - t_start
                pairs_done += float(tot[3])
                rec = {
                    "step": done,
                    "epoch": round(done / steps_per_epoch, 4),
                    # None when every step of the interval was skipped (non-finite)
                    "rm/loss": float(tot[0] / tot[1]) if tot[1] > 0 else None,
                    "rm/accuracy": float(tot[2] / tot[3]) if tot[3] > 0 else None,
                    "rm/margin": float(tot[4] / tot[3]) if tot[3] > 0 else None,
                    "rm/lr": scheduler.get_last_lr()[0],
                    "rm/skipped_steps": skipped_in_interval,
                    "rm/nonfinite_total": nonfinite_total,
                    "rm/pairs": int(tot[3]),
                    "rm/grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "perf/pairs_per_s": pairs_done / elapsed if elapsed > 0 else None,
                    "perf/responses_per_step": float(tot[5]) / (done - last_logged),
                }
                logger.log(rec)
                skipped_in_interval = 0
                last_logged = done
                if rec["rm/loss"] is not None and rec["rm/accuracy"] is not None:
                    progress.update(
                        task, info=f"loss {rec['rm/loss']:.3f} acc {rec['rm/accuracy']:.3f}"
                    )
                sums.zero_()
            progress.update(task, completed=done)

            # The last step needs no checkpoint: the final model is saved below.
            if (
                done < total_steps
                and bad_in_a_row == 0
                and (
                    (config.save_every and done % config.save_every == 0)
                    or done % steps_per_epoch == 0
                )
            ):
                state = {
                    "step": done,
                    "epoch": done // steps_per_epoch,
                    "step_in_epoch": done % steps_per_epoch,
                    "n_train": len(train_items),
                    "world_size": n_proc,
                    "bad_in_a_row": bad_in_a_row,
                    "nonfinite_total": nonfinite_total,
                    "config": _fingerprint(config),
                }
                last_good = str(
                    _save_checkpoint(accelerator, out, done, state, config.keep_checkpoints)
                )
                kill_point("after-checkpoint", done)
    train_seconds = time.perf_counter() - t_start
    rm.model = accelerator.unwrap_model(model)
    rm.model.eval()

    # 7. Normalize: gain/bias so scores of the reference responses have mean 0, std 1.
    if config.normalize:
        if config.normalize_data is not None:
            ref_prompts, ref_responses = _read_reference(config.normalize_data, config.format)
        else:
            ref_prompts = [r.model_prompt for r in train_rankings for _ in r.responses]
            ref_responses = [x.model_input for r in train_rankings for x in r.responses]
        pick = list(range(len(ref_responses)))
        random.Random(config.seed).shuffle(pick)
        pick = sorted(pick[: config.normalize_samples])
        feats, _ = rm.encode([ref_prompts[i] for i in pick], [ref_responses[i] for i in pick])
        raw = _score_sharded(rm, accelerator, feats, config.eval_batch_size)
        try:
            gain, bias = rm.set_normalization(raw)
            say(f"normalized on {len(pick)} reference responses: gain {gain:.4g}, bias {bias:.4g}")
        except ValueError as e:
            say(f"normalization skipped: {e}")

    # 8. Evaluate on the held-out rankings (normalized scores).
    results: dict[str, Any]
    if eval_items:
        results = evaluate(rm, eval_items, accelerator, config.eval_batch_size)
    else:
        results = pair_metrics([], [])
        results["note"] = "no held-out data: " + split_description(
            list(train_pref), config.eval_split, config.data
        )
    results.update(
        {
            "eval_data": config.eval_data
            or split_description(list(train_pref), config.eval_split, config.data),
            "normalized": rm.settings.normalized_on is not None,
            "train_prompts": len(train_items),
            "train_pairs_per_epoch": pairs_per_epoch,
            "steps": total_steps,
            "train_seconds": round(train_seconds, 3),
            "overlong": {"policy": config.overlong, "train": counts, "eval": eval_counts},
        }
    )
    if eval_items:
        say(
            f"held-out accuracy {results['accuracy']:.4f} on {results['n_pairs']} pairs of "
            f"{results['n_rankings']} rankings of {_distinct_prompts(eval_rankings)} "
            f"(margin {results['margin']:.3f}, loss {results['loss']:.4f})"
        )

    # 9. Save: OUT becomes the reward model directory, atomically, by the main process.
    logger.close()
    accelerator.wait_for_everyone()
    if main:
        _save_final(rm, out, {"eval.json": _jsonable(results)})
        say(f"saved the reward model to {out}")
    accelerator.wait_for_everyone()
    return results


def _n_pairs(ranks: list[int]) -> int:
    return sum(1 for i in range(len(ranks)) for j in range(len(ranks)) if ranks[i] < ranks[j])


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """NaN → null so eval.json is strict JSON."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, dict):
            out[k] = _jsonable(v)
        else:
            out[k] = v
    return out
