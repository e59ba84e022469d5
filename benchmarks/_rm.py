"""Reward-model training, ours vs TRL's RewardTrainer, on the same rankings.

Ours trains on native K-rankings (each response forwarded once per step); TRL gets the same
rankings expanded into K(K−1)/2 explicit-prompt pairs. A batch holds the same comparisons on both
sides (B rankings for us = 6B pairs for TRL when K = 4), so both take the same optimizer steps.
Held-out accuracy is computed by one function for both (:func:`pair_accuracy`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from _machine import GcTimer, peak_rss_mb
from _world import read_jsonl


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Raw scalar scores of ``prompt + response + EOS`` texts (read at the last non-pad token)."""
    model.eval()
    out = []
    for s in range(0, len(texts), batch_size):
        enc = [
            tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts[s : s + batch_size]
        ]
        width = max(len(x) for x in enc)
        ids = torch.full((len(enc), width), tokenizer.pad_token_id)
        am = torch.zeros((len(enc), width), dtype=torch.long)
        for i, x in enumerate(enc):  # right padding: SequenceClassification reads the last non-pad
            ids[i, : len(x)] = torch.tensor(x)
            am[i, : len(x)] = 1
        out.append(model(input_ids=ids, attention_mask=am).logits[:, 0].float())
    return torch.cat(out)


def pair_accuracy(model, tokenizer, rankings: list[dict]) -> float:
    """Share of the held-out strict pairs whose better response scores strictly higher."""
    texts = [r["prompt"] + x["text"] for r in rankings for x in r["responses"]]
    scores = score_texts(model, tokenizer, texts).tolist()
    correct = total = pos = 0
    for r in rankings:
        ids = [x["id"] for x in r["responses"]]
        s = dict(zip(ids, scores[pos : pos + len(ids)], strict=True))
        pos += len(ids)
        order = r["ranking"]
        for a in range(len(order)):
            for b in range(a + 1, len(order)):
                correct += s[order[a]] > s[order[b]]
                total += 1
    return correct / total


def run(side: str, spec: dict) -> dict:
    """Train one reward model (``side`` = "ours" or "trl"); returns timings, accuracy, memory."""
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    eval_rankings = read_jsonl(spec["eval_rankings"])
    k = spec["k"]
    pairs_per_ranking = k * (k - 1) // 2
    out = Path(spec["out_dir"]) / f"rm-{side}"
    if side == "ours":
        from rlhfkit.reward_training import RewardConfig, train_reward_model
    else:
        from datasets import Dataset
        from trl import RewardConfig, RewardTrainer
    rss_before = peak_rss_mb()
    with GcTimer() as gct:
        if side == "ours":
            cfg = RewardConfig(
                model=spec["model"],
                data=spec["train_rankings"],
                out=str(out),
                eval_split=0.0,
                max_length=spec["max_length"],
                epochs=spec["epochs"],
                batch_size=spec["rankings_per_batch"],
                learning_rate=spec["learning_rate"],
                lr_scheduler_type="linear",
                adam_epsilon=1e-8,
                max_grad_norm=1.0,
                normalize=False,
                seed=spec["seed"],
                logging_steps=10,
                progress=False,
                overwrite=True,
            )
            t0 = time.perf_counter()
            res = train_reward_model(cfg)
            wall = time.perf_counter() - t0
            train_seconds = float(res["train_seconds"])
            comparisons = res["steps"] * spec["rankings_per_batch"] * pairs_per_ranking
            model = AutoModelForSequenceClassification.from_pretrained(out)
            tokenizer = AutoTokenizer.from_pretrained(out)
        else:
            pairs = read_jsonl(spec["train_pairs"])
            tokenizer = AutoTokenizer.from_pretrained(spec["model"])
            args = RewardConfig(
                output_dir=str(out),
                per_device_train_batch_size=spec["rankings_per_batch"] * pairs_per_ranking,
                gradient_accumulation_steps=1,
                num_train_epochs=spec["epochs"],
                learning_rate=spec["learning_rate"],
                lr_scheduler_type="linear",
                warmup_steps=0,
                weight_decay=0.0,
                adam_epsilon=1e-8,
                max_grad_norm=1.0,
                max_length=spec["max_length"],
                seed=spec["seed"],
                # Fair on a CPU: TRL's defaults (bf16, gradient checkpointing) are ~19× slower here.
                bf16=False,
                fp16=False,
                gradient_checkpointing=False,
                use_cpu=True,
                # No overheads we do not also have: no eval, no checkpoints, no trackers, no bars.
                eval_strategy="no",
                save_strategy="no",
                report_to="none",
                logging_steps=10,
                disable_tqdm=True,
                dataloader_num_workers=0,
            )
            t0 = time.perf_counter()
            trainer = RewardTrainer(
                model=spec["model"],
                args=args,
                train_dataset=Dataset.from_list(pairs),
                processing_class=tokenizer,
            )
            t1 = time.perf_counter()
            trainer.train()
            train_seconds = time.perf_counter() - t1
            wall = time.perf_counter() - t0
            comparisons = len(pairs) * spec["epochs"]
            model = trainer.model
    peak = peak_rss_mb()
    accuracy = pair_accuracy(model, tokenizer, eval_rankings)
    return {
        "side": side,
        "train_seconds": train_seconds,
        "wall_seconds": wall,
        "comparisons": comparisons,
        "comparisons_per_s": comparisons / train_seconds,
        "heldout_accuracy": accuracy,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
        "gc_seconds": gct.seconds,
        "gc_collections": gct.collections,
    }
