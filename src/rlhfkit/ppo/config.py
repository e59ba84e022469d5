"""``PPOConfig``: every setting of a PPO run, with a one-line help each (the config *is* the
command line, ``rlhfkit ppo --help``, and can come from YAML), and what resuming compares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlhfkit.errors import ConfigError
from rlhfkit.runtime.trackers import LOGGING_DIR, ReportTo

# What a run leaves in its --out (besides config.json and report.html, which a new run rewrites).
RUN_DIR_ENTRIES = (
    "metrics.jsonl", "samples.jsonl", "checkpoints", "policy", "stopped.json", LOGGING_DIR,
)  # fmt: skip

# The learning rate of a critic that is only a value head (on the policy trunk, or on the reward
# model's frozen trunk), as a multiple of the policy's, unless --value-head-lr-scale says
# otherwise (measured in docs/ppo.md). A separate critic backbone trains with its head at 1×.
HEAD_LR_MULTIPLIER = 10.0
_HEAD_ONLY_CRITICS = ("head", "frozen-reward-model", "frozen-reward-model+head")


@dataclass
class PPOConfig:
    """Tune a causal LM with PPO against a reward model and/or a reward function."""

    policy: str
    """Policy to tune: a save_pretrained directory or hub name (also the frozen reference)."""
    prompts: str
    """Prompts: JSONL with a 'prompt' field (TRL prompt-only datasets too), or a .txt file."""
    out: str
    """Run directory: policy/, checkpoints/, metrics.jsonl, samples.jsonl, config.json."""
    reward_model: str | None = None
    """Reward model directory (rlhfkit train-rm output); scores are normalized with its gain/bias."""
    ensemble_objective: Literal["mean", "worst", "uwo"] = "mean"
    """With an ensemble as --reward-model (train-rm --ensemble): how its members' scores combine:
    their mean, the worst (min), or uncertainty-weighted (mean − λ·variance; Coste et al. 2023)."""
    uwo_lambda: float = 1.0
    """λ of --ensemble-objective uwo."""
    reward_fn: str | None = None
    """Reward function FILE.py:NAME or module:NAME, fn(prompts, responses) -> list[float]. With
    --reward-model too, the score is the sum of both."""
    gold_reward_fn: str | None = None
    """Optional reward function that is only logged (objective/gold_scores), never trained on."""

    total_episodes: int = 1024
    """Rollouts (prompt + sampled response) to train on; updates = total_episodes // batch_size."""
    batch_size: int = 64
    """Global rollouts per PPO update (split evenly across processes)."""
    num_mini_batches: int = 1
    """Minibatches per PPO epoch (one optimizer step each)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per minibatch (lower memory, same result)."""
    num_ppo_epochs: int = 4
    """Passes over each rollout batch (was --ppo-epochs)."""
    forward_batch_size: int | None = None
    """Rows per no-grad forward pass during the rollout (None: the whole local batch)."""

    response_length: int = 32
    """Maximum new tokens per response."""
    max_prompt_length: int = 256
    """Prompts longer than this keep their last tokens."""
    temperature: float = 0.7
    """Sampling temperature; logits are divided by it again when logprobs are recomputed."""
    top_k: int = 0
    """Top-k sampling (0 = off: plain sampling, as PPO's theory assumes)."""
    top_p: float = 1.0
    """Nucleus sampling (1.0 = off)."""
    stop_token: str | None = None
    """Token that ends a response besides EOS and the model's generation_config stop ids (e.g.
    '.'); None: those only."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """Conversational prompts (message lists) go through the policy's chat template with the
    generation prompt (auto: when it has one; always: plain prompts too, as one user message;
    never: plain "Role: content" text). A reward model renders them its own way (docs/models.md)."""
    missing_eos_penalty: float | None = None
    """Subtracted from the score of responses that never emit EOS / the stop token."""
    reward_clip: float | None = None
    """Clip scores to [-c, c] after normalization (None: no clipping)."""

    kl_coef: float = 0.05
    """β in reward - β·KL (the initial β when --kl-target is set)."""
    kl_target: float | None = None
    """Target KL per response for the adaptive controller (None: fixed β)."""
    kl_horizon: int = 10000
    """Adaptive controller horizon in episodes."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token KL estimator: k1 = log ratio (unbiased), k2, k3 (see docs/metrics.md)."""
    kl_in_loss: bool = False
    """Put β·KL in the loss (token mean) instead of in the per-token reward."""
    whiten_rewards: bool = False
    """Rescale per-token rewards to unit variance (mean kept) before GAE."""

    gamma: float = 1.0
    """Discount factor."""
    lam: float = 0.95
    """GAE λ."""
    cliprange: float = 0.2
    """PPO ratio clip ε."""
    cliprange_value: float = 0.2
    """Value clip around the rollout's values."""
    vf_coef: float = 0.1
    """Value-loss coefficient."""
    value_head_lr_scale: float | None = None
    """The value head's learning rate as a multiple of --learning-rate. None: 10 when the critic is
    only a head (head, frozen-reward-model, frozen-reward-model+head: a linear layer on a trunk that
    moves little or not at all), 1 for a separate critic (its head trains with its own
    backbone)."""
    value_norm: bool = True
    """Learn values in units of the returns' running std (PopArt), so the critic copes with raw
    reward-model scores of any scale; the value loss and its clip range are in those units too."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (0 = off)."""

    learning_rate: float = 1e-5
    """Adam learning rate (annealed linearly to 0 unless --lr-schedule constant)."""
    lr_scheduler_type: Literal["linear", "constant"] = "linear"
    """Learning-rate schedule over updates (was --lr-schedule)."""
    adam_epsilon: float = 1e-5
    """Adam epsilon (see docs/ppo.md on PyTorch vs TensorFlow Adam; was --adam-eps)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm (0 = no clipping)."""

    critic: Literal[
        "auto", "head", "frozen-reward-model", "frozen-reward-model+head", "policy", "reward-model"
    ] = "auto"
    """Value function: a head on the policy trunk; a head on the reward model's frozen trunk
    (+head: plus a head on the policy trunk); a separate model from the policy / RM. auto:
    frozen-reward-model+head when a reward model reads the policy's tokens, else head
    (docs/ppo.md)."""
    lora_r: int = 0
    """LoRA rank (0 = tune all weights); with LoRA the reference is the adapters-off model."""
    lora_alpha: int = 16
    """LoRA alpha."""
    lora_target_modules: str | None = None
    """Comma-separated module names for LoRA (None: PEFT's default for the architecture, or every
    linear layer but the output head for an architecture PEFT has no default for)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype: keep float32 on CPU (bf16/fp16 are emulated there and ~100× slower)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (slower; off by default)."""
    fsdp: bool = False
    """Shard the policy, critic, reference and reward model across the processes with FSDP2 (each
    holds 1/N of the weights, gradients and Adam state; docs/scaling.md). Implied by an Accelerate
    FSDP config."""

    seed: int = 0
    """Random seed (each process samples with seed + rank, unless --sample-chunk is set)."""
    sample_chunk: int = 0
    """Sample each update's global batch in chunks of this many rows, each chunk from its own seed
    (seed, update, chunk), so that the samples do not depend on the number of processes (each
    process's share must be a multiple of it). 0: each process draws from its own stream."""
    save_every: int = 0
    """Checkpoint every N updates in OUT/checkpoints/step-N (0 = no intermediate checkpoints)."""
    save_total_limit: int | None = 2
    """How many of the newest checkpoints to keep (None: all; was --keep-checkpoints)."""
    resume: bool = False
    """Continue from the newest checkpoint in --out."""
    overwrite: bool = False
    """Start afresh in an --out that holds a previous run, deleting its logs, samples,
    checkpoints, policy and stop record (without it, or --resume, such an --out is refused)."""
    sample_every: int = 10
    """Write sample completions to samples.jsonl every N updates (0 = never)."""
    num_samples: int = 4
    """Completions written per sampling."""
    max_bad_steps: int = 3
    """Stop after this many updates in a row with a non-finite reward or loss (was
    --max-bad-updates)."""
    hacking_check_every: int = 0
    """Compare current vs initial policy samples every N updates (0 = off); logs hacking/*."""
    hacking_num_prompts: int = 32
    """Fixed prompts (the first of the file) sampled for the hacking monitor."""
    stop_on_hacking: bool = False
    """Stop when the monitor flags something; the last clean check's checkpoint is kept."""
    progress: bool = True
    """Show a progress bar with reward and KL."""
    report_to: list[ReportTo] = field(default_factory=lambda: ["none"])
    """Experiment trackers that also receive the metrics (metrics.jsonl's names and steps) and
    these settings: none, or any of tensorboard (OUT/runs), wandb, trackio, mlflow
    (docs/tracking.md)."""
    run_name: str | None = None
    """The run's name in the trackers (default: OUT's directory name)."""
    push_to_hub: str | None = None
    """After training, upload OUT/policy (the tuned model and its model card) and OUT/runs to this
    Hugging Face Hub repo, e.g. you/my-policy (docs/model-cards.md)."""

    def __post_init__(self) -> None:
        checks = [
            (self.total_episodes > 0, "--total-episodes must be > 0"),
            (self.batch_size > 0, "--batch-size must be > 0"),
            (
                self.total_episodes >= self.batch_size,
                f"--total-episodes ({self.total_episodes}) is smaller than one batch ({self.batch_size})",
            ),
            (self.num_mini_batches > 0, "--num-mini-batches must be > 0"),
            (self.gradient_accumulation_steps > 0, "--gradient-accumulation-steps must be > 0"),
            (self.num_ppo_epochs > 0, "--num-ppo-epochs must be > 0"),
            (self.response_length > 0, "--response-length must be > 0"),
            (self.temperature > 0, "--temperature must be > 0 (PPO needs sampling)"),
            (0 < self.top_p <= 1.0, "--top-p must be in (0, 1]"),
            (self.kl_coef >= 0, "--kl-coef must be ≥ 0"),
            (self.kl_target is None or self.kl_target > 0, "--kl-target must be > 0"),
            (self.learning_rate > 0, "--learning-rate must be > 0"),
            (self.uwo_lambda >= 0, "--uwo-lambda must be >= 0"),
            (
                self.value_head_lr_scale is None or self.value_head_lr_scale > 0,
                "--value-head-lr-scale must be > 0",
            ),
            (self.max_bad_steps > 0, "--max-bad-steps must be > 0"),
            (self.sample_chunk >= 0, "--sample-chunk must be ≥ 0"),
            (
                self.save_total_limit is None or self.save_total_limit > 0,
                "--save-total-limit must be > 0 (None keeps every checkpoint)",
            ),
            (
                self.critic != "reward-model" or self.reward_model is not None,
                "--critic reward-model needs --reward-model",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def num_updates(self) -> int:
        return self.total_episodes // self.batch_size

    def value_head_lr_multiplier(self, critic_kind: str) -> float:
        """``value_head_lr_scale``, or its default for the critic as trained (``auto`` resolved)."""
        if self.value_head_lr_scale is not None:
            return self.value_head_lr_scale
        return HEAD_LR_MULTIPLIER if critic_kind in _HEAD_ONLY_CRITICS else 1.0


# How a run trained before the setting existed (read from older checkpoints that lack it).
# (Conversational prompts were rendered as plain text before chat templates were applied.)
_SETTINGS_BEFORE_THEY_EXISTED = {
    "ensemble_objective": "mean", "uwo_lambda": 1.0,
    "value_norm": False, "value_head_lr_scale": 1.0, "chat_template": False, "fsdp": False,
    "sample_chunk": 0,
}  # fmt: skip

# Settings that must not change when a run resumes (anything that changes what is trained).
_RESUME_MUST_MATCH = (
    "policy", "reward_model", "reward_fn", "prompts", "batch_size", "num_mini_batches",
    "gradient_accumulation_steps", "num_ppo_epochs", "response_length", "max_prompt_length",
    "temperature", "top_k", "top_p", "stop_token", "critic", "lora_r", "lora_alpha",
    "lora_target_modules", "dtype", "seed", "kl_estimator", "kl_in_loss", "total_episodes",
    "learning_rate", "lr_scheduler_type", "value_norm", "value_head_lr_scale", "chat_template",
    "fsdp", "sample_chunk", "ensemble_objective", "uwo_lambda",
)  # fmt: skip


def batch_sizes(cfg: PPOConfig, world: int) -> tuple[int, int, int]:
    """Global batch -> per process -> minibatch -> micro-batch, each dividing exactly (the error
    says which does not)."""
    if cfg.batch_size % world:
        raise ConfigError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    local = cfg.batch_size // world
    if local % cfg.num_mini_batches:
        raise ConfigError(
            f"per-process batch {local} is not divisible by --num-mini-batches {cfg.num_mini_batches}"
        )
    if cfg.sample_chunk and local % cfg.sample_chunk:
        raise ConfigError(
            f"per-process batch {local} is not divisible by --sample-chunk {cfg.sample_chunk}"
        )
    mini = local // cfg.num_mini_batches
    if mini % cfg.gradient_accumulation_steps:
        raise ConfigError(
            f"minibatch {mini} is not divisible by --gradient-accumulation-steps {cfg.gradient_accumulation_steps}"
        )
    return local, mini, mini // cfg.gradient_accumulation_steps


def lora_targets(spec: str | None, model_type: str) -> list[str] | str | None:
    """LoRA's target modules: the comma-separated names given, else PEFT's default for the model
    type, else (a type PEFT has no default for, such as Phi-3 with its fused ``qkv_proj``) every
    linear layer but the output head (PEFT's ``"all-linear"``)."""
    if spec:
        return spec.split(",")
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

    return None if model_type in known else "all-linear"
