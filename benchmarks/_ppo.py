"""PPO, ours vs TRL's ``trl.experimental.ppo.PPOTrainer``, on the same models, prompts and settings.

Both sides: the same policy checkpoint (also the frozen reference), the same reward model, a
separate critic initialised from that reward model (TRL's required ``value_model``; our
``critic="reward-model"``; side "ours"), the same batch / minibatches / PPO epochs / response length /
temperature / β / learning rate and linear decay / Adam ε, and EOS as the stop token. TRL's PPO
does not clip gradients, so ours runs with ``max_grad_norm=0`` to take the same steps.

A third side, "ours-default", is rlhfkit as its users run it: everything the same except the
critic, which is rlhfkit's default (``critic="auto"``; here, with a reward model that reads the
policy's tokens, ``frozen-reward-model+head``: a value head on the reward model's frozen trunk,
computed once per rollout, plus a head on the policy trunk; TRL cannot do that).

The final policy of each side is scored by one function (:func:`evaluate_policy`): sample the
evaluation prompts, score with the shared reward model and with the world's gold quality.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from _machine import GcTimer, current_rss_mb, peak_rss_mb
from _rm import score_texts
from _world import gold_quality, read_jsonl

# ---------------------------------------------------------------------------------- FLOPs


def forward_flops(p: dict, tokens: int, logits_kept: int) -> float:
    """Forward FLOPs of one sequence of ``tokens`` through a GPT-2 described by ``p``
    (:func:`_world.count_params`): 2·N_non_embedding per token for the weight matmuls, 4·L·T²·d for
    attention scores and the weighted sum (the full T×T square that SDPA computes), and 2·d·V per
    position whose logits are computed (``logits_kept``; 0 for a critic/RM backbone)."""
    L, d, V = p["n_layer"], p["n_embd"], p["vocab"]
    return 2 * p["non_embedding"] * tokens + 4 * L * tokens * tokens * d + 2 * d * V * logits_kept


def generation_flops(p: dict, prompt_len: int, response_length: int) -> float:
    """Forward FLOPs of sampling ``response_length`` tokens after a ``prompt_len``-token prompt with
    the KV cache: the prompt once (logits of its last position), then one token at a time
    attending to the t keys before it."""
    return forward_flops(p, prompt_len, 1) + sum(
        2 * p["non_embedding"] + 4 * p["n_layer"] * t * p["n_embd"] + 2 * p["n_embd"] * p["vocab"]
        for t in range(prompt_len + 1, prompt_len + response_length)
    )


def ppo_flops(
    policy: dict,
    critic: dict | None,
    rm: dict,
    s: dict,
    prompt_len: int,
    critic_trained: bool = True,
) -> dict:
    """Model FLOPs of one PPO update (per phase). Backward = 2 × forward, so a training pass
    is 3 × forward (the ≈ 6·N·tokens rule plus the attention and LM-head terms). ``critic=None``:
    a value head on the policy trunk, whose d → 1 projection (2·d per token) is not counted.
    ``critic_trained=False``: a frozen critic trunk, one forward per rollout and none in training."""
    B, R, E = s["batch_size"], s["response_length"], s["ppo_epochs"]
    T = prompt_len + R
    critic_fwd = forward_flops(critic, T, 0) if critic is not None else 0.0
    train = E * B * 3 * (forward_flops(policy, T, R + 1) + (critic_fwd if critic_trained else 0.0))
    gen_per_seq = generation_flops(policy, prompt_len, R)
    rollout = B * (2 * forward_flops(policy, T, R + 1) + critic_fwd)
    reward = B * forward_flops(rm, T + 1, 0)  # + EOS
    return {
        "train": train,
        "generate": B * gen_per_seq,
        "rollout_forward": rollout,
        "reward": reward,
    }


# ---------------------------------------------------------------------------------- eval


@torch.no_grad()
def evaluate_policy(policy, tokenizer, prompts: list[str], rm, rm_tokenizer, spec: dict) -> dict:
    """Mean reward-model score and gold quality of responses sampled from ``policy``."""
    from rlhfkit.rollout import decode_responses, encode_prompts, generate, truncate_after_stop

    policy.eval()
    torch.manual_seed(1234)
    pad = tokenizer.pad_token_id
    ids, am = encode_prompts(tokenizer, prompts, pad)
    raw = generate(
        policy, ids, am, spec["response_length"], spec["temperature"], pad, [tokenizer.eos_token_id]
    )
    responses, mask, has_stop = truncate_after_stop(raw, [tokenizer.eos_token_id], pad)
    texts = decode_responses(tokenizer, responses, mask)
    scores = score_texts(
        rm, rm_tokenizer, [p + " " + t for p, t in zip(prompts, texts, strict=True)]
    )
    return {
        "reward": float(scores.mean()),
        "gold": sum(gold_quality(t) for t in texts) / len(texts),
        "eos_frac": float(has_stop.float().mean()),
        "length": float(mask.sum(1).float().mean()),
    }


def initial_eval(spec: dict) -> dict:
    """The untrained policy's evaluation (the baseline both sides start from)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["policy"])
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"])
    rm = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"])
    rm_tok = AutoTokenizer.from_pretrained(spec["reward_model"])
    prompts = [r["prompt"] for r in read_jsonl(spec["eval_prompts"])]
    return evaluate_policy(policy, tok, prompts, rm, rm_tok, spec)


# ---------------------------------------------------------------------------------- runs


def _ours(spec: dict, out: Path, critic: str) -> tuple[float, object, object, dict, str]:
    from rlhfkit.ppo import PPOConfig, PPOTrainer

    cfg = PPOConfig(
        policy=spec["policy"],
        prompts=spec["prompts"],
        out=str(out),
        reward_model=spec["reward_model"],
        total_episodes=spec["total_episodes"],
        batch_size=spec["batch_size"],
        num_mini_batches=spec["num_mini_batches"],
        gradient_accumulation_steps=1,
        num_ppo_epochs=spec["ppo_epochs"],
        response_length=spec["response_length"],
        temperature=spec["temperature"],
        kl_coef=spec["kl_coef"],
        learning_rate=spec["learning_rate"],
        lr_scheduler_type="linear",
        adam_epsilon=1e-5,
        max_grad_norm=0.0,  # TRL's PPO does not clip: take the same steps
        critic=critic,
        seed=spec["seed"],
        sample_every=0,
        hacking_check_every=0,
        progress=False,
    )
    trainer = PPOTrainer(cfg)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    phases: dict[str, list[float]] = {}
    for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        for k, v in rec.items():
            if k.startswith("time/") and isinstance(v, int | float):
                phases.setdefault(k, []).append(float(v))
    policy = trainer.accelerator.unwrap_model(trainer.model).policy
    return seconds, policy, trainer.tokenizer, phases, trainer.critic_kind


def _trl(spec: dict, out: Path) -> tuple[float, object, object, dict]:
    trainer, tok = build_trl(spec, out)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    unwrapped = trainer.accelerator.unwrap_model(trainer.model).policy
    return seconds, unwrapped, tok, {}


def build_trl(spec: dict, out: Path):
    """TRL's PPO trainer for ``spec`` (every setting stated here), and its tokenizer."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = AutoTokenizer.from_pretrained(spec["policy"], padding_side="left")
    prompts = [r["prompt"] for r in read_jsonl(spec["prompts"])]
    ds = Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in prompts]})
    args = PPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        num_mini_batches=spec["num_mini_batches"],
        num_ppo_epochs=spec["ppo_epochs"],
        total_episodes=spec["total_episodes"],
        local_rollout_forward_batch_size=spec["batch_size"],
        response_length=spec["response_length"],
        temperature=spec["temperature"],
        stop_token="eos",
        kl_coef=spec["kl_coef"],
        kl_estimator="k1",
        learning_rate=spec["learning_rate"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        adam_epsilon=1e-5,
        weight_decay=0.0,
        seed=spec["seed"],
        # Fair on a CPU: TRL's defaults (bf16, gradient checkpointing) are ~19× slower here.
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        # No overheads we do not also have: no sample tables, eval, checkpoints, trackers, bars.
        num_sample_generations=0,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"])
    ref = AutoModelForCausalLM.from_pretrained(spec["policy"])
    value = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"], num_labels=1)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"], num_labels=1)
    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=ds,
        value_model=value,
        eval_dataset=ds.select(range(min(8, len(ds)))),
    )
    return trainer, tok


# The sides of a PPO comparison: ours with TRL's work (a separate critic initialised from the RM,
# like TRL's required ``value_model``), ours as our users run it (the default critic, "auto": a
# value head on the reward model's frozen trunk plus one on the policy trunk here; TRL has no such
# option), and TRL.
OURS_CRITIC = {"ours": "reward-model", "ours-default": "auto"}


def run(side: str, spec: dict) -> dict:
    """One PPO run (``side``: "ours", "ours-default" or "trl"): episodes/s, peak RSS, final reward."""
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    out = Path(spec["out_dir"]) / f"ppo-{side}-{spec['name']}"
    # A fresh run directory: our metrics.jsonl is appended to, and the phase times read back from
    # it must be this run's only.
    shutil.rmtree(out, ignore_errors=True)
    with GcTimer() as gct:
        rss_start = current_rss_mb()
        if side == "trl":
            seconds, policy, tok, phases = _trl(spec, out)
            critic = "value_model (a separate critic from the reward model)"
        else:
            seconds, policy, tok, phases, critic = _ours(spec, out, OURS_CRITIC[side])
    peak = peak_rss_mb()
    gc_seconds = gct.seconds
    rm = AutoModelForSequenceClassification.from_pretrained(spec["reward_model"])
    rm_tok = AutoTokenizer.from_pretrained(spec["reward_model"])
    prompts = [r["prompt"] for r in read_jsonl(spec["eval_prompts"])]
    ev = evaluate_policy(policy, tok, prompts, rm, rm_tok, spec)
    updates = spec["total_episodes"] // spec["batch_size"]
    return {
        "side": side,
        "critic": critic,
        "train_seconds": seconds,
        "episodes": updates * spec["batch_size"],
        "episodes_per_s": updates * spec["batch_size"] / seconds,
        "peak_rss_mb": peak,
        "rss_start_mb": rss_start,
        "gc_seconds": gc_seconds,
        "gc_collections": gct.collections,
        "final_reward": ev["reward"],
        "final_gold": ev["gold"],
        "final_eos_frac": ev["eos_frac"],
        "final_length": ev["length"],
        "phases": phases,
    }
