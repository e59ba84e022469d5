"""``RewardConfig``: every setting of ``rlhfkit train-rm``, with a one-line help each (the config
*is* the command line, and can come from YAML), and what resuming compares."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from rlhfkit.runtime.renamed import upgrade_settings


@dataclass
class RewardConfig:
    """Train a reward model on rankings (or pairs): one forward per response, Bradley-Terry loss
    over every ordered pair of a prompt's responses."""

    model: str
    """Backbone or reward model: a directory or hub name (causal LM, or an encoder such as MiniLM)."""
    data: str
    """Training preferences: native rankings, TRL pairs, HH-RLHF or UltraFeedback (JSONL/Parquet/dataset dir)."""
    out: str
    """Output directory: the reward model (loadable by AutoModelForSequenceClassification), eval.json, metrics.jsonl."""
    eval_data: str | None = None
    """Held-out preferences for evaluation (default: hold out --eval-split of the training prompts)."""
    eval_split: float = 0.05
    """Fraction of training prompts held out when --eval-data is not given (0 = no evaluation)."""
    format: str = "auto"
    """Data format: auto, rankings, pairs, hh, ultrafeedback."""
    skip_invalid: bool = False
    """Skip invalid records (counted in the report) instead of stopping at the first one."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """Conversational data: render each (prompt, response) with the backbone's chat template (auto:
    when the data has message lists and the tokenizer a template; always: plain prompts too, as one
    user message; never: plain "Role: content" text); stored with the reward model (docs/models.md)."""
    template: str | None = None
    """Causal LMs: input text with {prompt} and {response} (default "{prompt}\n{response}", then EOS); encoders use a text pair."""
    max_length: int = 512
    """Max tokens per (prompt, response); capped by the model's positions."""
    overlong: Literal["truncate", "drop"] = "truncate"
    """Over-long items: truncate from the left (the response end is kept) or drop the response from its ranking."""
    epochs: int = 1
    """Passes over the training rankings; one is usually best (more overfits: InstructGPT, Ziegler et al.)."""
    batch_size: int = 32
    """Prompts (rankings) per optimizer step, global: each of N processes takes batch_size / N."""
    gradient_accumulation_steps: int = 1
    """Split each process's share of a batch into this many micro-batches (less memory, same result)."""
    learning_rate: float = 3e-5
    """Peak AdamW learning rate."""
    lr_scheduler_type: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate decay after warmup: linear to 0, cosine to 0, or constant (was --lr-scheduler)."""
    warmup_ratio: float = 0.0
    """Fraction of the optimizer steps spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay (not applied to biases and norm weights)."""
    adam_epsilon: float = 1e-8
    """AdamW epsilon (was --adam-eps)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    use_margin: bool = True
    """Use a record's margin (TRL's "margin" field) in the loss: −log σ(r_w − r_l − margin)."""
    use_weight: bool = True
    """Weigh each record's loss by its "weight" (e.g. annotator reliability): the loss is the batch's weighted mean."""
    ensemble: int = 1
    """Train an ensemble of this many reward models (Coste et al. 2023) into OUT (docs/hacking.md, "Mitigations"); 1: one reward model."""
    ensemble_kind: Literal["members", "heads"] = "members"
    """Ensemble kind: independent members (seeds seed, seed+1, ...: M times the cost), or M heads on one shared trunk (about the cost of one)."""
    bootstrap: bool = False
    """Each ensemble member (or head) learns from its own bootstrap resample of the training rankings."""
    center_rewards_coefficient: float = 0.0
    """Add coef · mean(r²) over the batch's responses to keep rewards centred at 0 (TRL, Eisenstein et al. 2023; 0.01 is typical)."""
    normalize: bool = True
    """After training, set gain/bias so scores of the reference responses have mean 0, std 1 (lm-human-preferences)."""
    normalize_data: str | None = None
    """Reference responses for normalization (preferences or prompt/response JSONL; default: the training responses)."""
    normalize_samples: int = 2048
    """At most this many reference responses (a random subset) set the normalization."""
    eval_batch_size: int = 64
    """Responses per forward pass when evaluating / normalizing."""
    share_prompt: bool = True
    """Causal-LM reward models: forward the tokens all K responses of a ranking start with (its
    prompt) once and the K responses on its key/value cache, instead of the prompt K times (the same
    rewards and gradients, fewer FLOPs; single process only, off for encoders)."""
    seed: int = 0
    """Random seed: head init, data order, held-out split."""
    logging_steps: int = 10
    """Write rm/* metrics to metrics.jsonl every this many optimizer steps (means over the interval)."""
    save_every: int = 0
    """Save a resumable checkpoint every this many optimizer steps (0 = only at each epoch's end)."""
    save_total_limit: int | None = 1
    """How many of the newest checkpoints to keep in OUT/checkpoints (None: all; was --keep-checkpoints, where 0 meant all)."""
    max_bad_steps: int = 3
    """Stop after this many optimizer steps in a row with a non-finite loss or gradient (each one
    is skipped, never applied); the last good checkpoint is kept."""
    resume: bool = False
    """Continue from the newest checkpoint in OUT/checkpoints (same data and settings required)."""
    overwrite: bool = False
    """Start afresh in an OUT that holds a previous run (its metrics and checkpoints are removed)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast on GPUs; keep "no" on CPU (bf16/fp16 are emulated and ~100× slower there)."""
    progress: bool = True
    """Show a progress bar."""

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
            (
                self.save_total_limit is None or self.save_total_limit > 0,
                "save_total_limit must be > 0 (None keeps every checkpoint)",
            ),
            (self.max_bad_steps >= 1, "max_bad_steps must be >= 1"),
            (self.ensemble >= 1, "ensemble must be >= 1 (1: one reward model)"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.normalize_samples >= 2, "normalize_samples must be >= 2"),
            (self.center_rewards_coefficient >= 0, "center_rewards_coefficient must be >= 0"),
            (self.overlong in ("truncate", "drop"), "overlong must be 'truncate' or 'drop'"),
            (
                self.lr_scheduler_type in ("linear", "cosine", "constant"),
                "lr_scheduler_type must be linear, cosine or constant",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


# How a run trained before the setting existed (plain-text data reads the same under "auto").
_SETTINGS_BEFORE_THEY_EXISTED = {
    "ensemble": 1, "ensemble_kind": "members", "bootstrap": False, "chat_template": "auto",
}  # fmt: skip

# Fields that must not change between a run and its --resume (the rest may, e.g. logging).
_RESUME_KEYS = (
    "model", "data", "eval_data", "eval_split", "format", "skip_invalid", "template", "max_length",
    "chat_template",
    "overlong", "epochs", "batch_size", "learning_rate", "lr_scheduler_type", "warmup_ratio",
    "weight_decay", "adam_epsilon", "max_grad_norm", "use_margin", "use_weight", "center_rewards_coefficient", "seed",
    "ensemble", "ensemble_kind", "bootstrap",
)  # fmt: skip


def fingerprint(config: RewardConfig) -> dict[str, Any]:
    """The settings a checkpoint records and a resume must match."""
    d = dataclasses.asdict(config)
    return {k: d[k] for k in _RESUME_KEYS}


def resume_mismatches(saved: dict[str, Any], config: RewardConfig) -> dict[str, tuple[Any, Any]]:
    """``{setting: (checkpoint's, now)}`` for every setting that differs; settings recorded under
    old names, or added after the checkpoint was written, count as that run trained with."""
    saved = {**_SETTINGS_BEFORE_THEY_EXISTED, **upgrade_settings(saved)}
    return {k: (saved.get(k), v) for k, v in fingerprint(config).items() if saved.get(k) != v}
