"""A reward model measured on held-out preferences (``eval.json``), the same way TRL counts it: a
pair is right when the better response scores strictly higher; ties in a ranking give no pair.
Also the normalization that comes before it (gain and bias from reference responses)."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlhfkit.reward.batching import Item, distinct_prompts

if TYPE_CHECKING:
    from rlhfkit.reward.config import RewardConfig


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


def score_sharded(
    rm: Any, accelerator: Any, features: list[dict[str, list[int]]], batch_size: int
) -> torch.Tensor:
    """Raw scores of already-tokenized inputs, each process scoring every N-th one; gathered."""
    from accelerate.utils import gather_object

    from rlhfkit.runtime.fsdp import is_sharded

    n_proc = accelerator.num_processes
    mine = list(range(accelerator.process_index, len(features), n_proc))
    mine.sort(key=lambda i: len(features[i]["input_ids"]))  # batch similar lengths together
    pairs: list[tuple[int, float]] = []
    was_training = rm.model.training
    rm.model.eval()
    # The same number of forwards on every process: each forward of a sharded model gathers its
    # weights from all of them (a process with fewer inputs scores a throwaway one).
    n_batches = math.ceil(math.ceil(len(features) / n_proc) / batch_size)
    with torch.no_grad():
        for s in range(0, n_batches * batch_size, batch_size):
            idx = mine[s : s + batch_size]
            if not idx:
                if is_sharded(rm.model):
                    rm.raw_rewards(rm.collate(features[:1]))
                continue
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
    rm: Any, items: list[Item], accelerator: Any, batch_size: int = 64
) -> dict[str, float]:
    """Score every response of ``items`` once and compute :func:`pair_metrics`.

    ``loss`` uses the raw scores (the quantity training minimised, comparable with ``rm/loss``);
    ``margin`` and ``reward_mean``/``reward_std`` use the normalized scores that ``score()`` returns
    (so a margin reads in reference standard deviations); ``raw_margin`` is the raw one.
    """
    feats = [f for it in items for f in it.features]
    raw = score_sharded(rm, accelerator, feats, batch_size)
    ranks = [it.ranks for it in items]

    def per_prompt(scores: torch.Tensor) -> list[torch.Tensor]:
        bounds = torch.tensor([0] + [len(it.features) for it in items]).cumsum(0).tolist()
        return [scores[a:b] for a, b in itertools.pairwise(bounds)]

    raw_m = pair_metrics(per_prompt(raw), ranks)
    res = pair_metrics(per_prompt(raw * rm.settings.gain + rm.settings.bias), ranks)
    res["loss"] = raw_m["loss"]
    res["raw_margin"] = raw_m["margin"]
    return res


def read_reference(path: str, fmt: str) -> tuple[list[Any], list[Any]]:
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


def n_pairs(ranks: list[int]) -> int:
    return sum(1 for i in range(len(ranks)) for j in range(len(ranks)) if ranks[i] < ranks[j])


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """NaN → null so eval.json is strict JSON."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, dict):
            out[k] = jsonable(v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------- after training: normalize, evaluate


def normalize(
    rm: Any, config: RewardConfig, accelerator: Any, rankings: list[Any], say: Any
) -> None:
    """Gain and bias so that the reference responses (``--normalize-data``, else the training
    responses; at most ``--normalize-samples`` of them) score mean 0, std 1 (lm-human-preferences)."""
    if config.normalize_data is not None:
        prompts, responses = read_reference(config.normalize_data, config.format)
    else:
        prompts = [r.model_prompt for r in rankings for _ in r.responses]
        responses = [x.model_input for r in rankings for x in r.responses]
    pick = list(range(len(responses)))
    random.Random(config.seed).shuffle(pick)
    pick = sorted(pick[: config.normalize_samples])
    feats, _ = rm.encode([prompts[i] for i in pick], [responses[i] for i in pick])
    raw = score_sharded(rm, accelerator, feats, config.eval_batch_size)
    try:
        gain, bias = rm.set_normalization(raw)
        say(f"normalized on {len(pick)} reference responses: gain {gain:.4g}, bias {bias:.4g}")
    except ValueError as e:
        say(f"normalization skipped: {e}")


def evaluate_held_out(
    rm: Any, config: RewardConfig, accelerator: Any, eval_items: list[Any],
    eval_rankings: list[Any], split: str, say: Any,
) -> dict[str, Any]:  # fmt: skip
    """Pairwise accuracy, margin and loss on the held-out rankings (a note when there are none)."""
    if not eval_items:
        return {**pair_metrics([], []), "note": "no held-out data: " + split}
    results = evaluate(rm, eval_items, accelerator, config.eval_batch_size)
    say(
        f"held-out accuracy {results['accuracy']:.4f} on {results['n_pairs']} pairs of "
        f"{results['n_rankings']} rankings of {distinct_prompts(eval_rankings)} "
        f"(margin {results['margin']:.3f}, loss {results['loss']:.4f})"
    )
    return results
