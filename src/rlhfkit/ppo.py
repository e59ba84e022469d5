"""PPO with a KL penalty: the policy-optimization stage of RLHF.

Reproduces the implementation details of OpenAI's lm-human-preferences (Ziegler et al. 2019) as
catalogued in "The N Implementation Details of RLHF with PPO" (Huang et al. 2023); docs/ppo.md
lists every detail with the place it lives in this file. ``PPOTrainer.train`` reads top to bottom:

1. take a batch of prompts          5. values, GAE, whitened advantages
2. generate responses               6. PPO epochs over shuffled minibatches
3. score them                       7. update the KL controller
4. logprobs, KL, per-token rewards  8. log, sample, check for hacking, checkpoint
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import importlib.util
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rlhfkit.chat import Prompt, as_text, is_conversational, render_prompt, use_chat_template
from rlhfkit.checkpoint import (
    TrainingStopped,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from rlhfkit.critic import (
    ActorCritic,
    build_critic,
    disable_dropout,
    fuse_activations,
    hidden_size_of,
    reads_same_tokens,
    trunk_of,
    value_head_from_score,
)
from rlhfkit.distributed import make_accelerator
from rlhfkit.errors import ConfigError
from rlhfkit.faults import inject_nan, kill_point
from rlhfkit.io import MetricsLogger, atomic_open, clear_previous_run, write_json
from rlhfkit.kl import AdaptiveKLController, FixedKLController
from rlhfkit.loading import (
    check_model_source,
    choose_pad_id,
    embedding_rows,
    load_causal_lm,
    stop_token_ids,
)
from rlhfkit.losses import ppo_clip_objective, ppo_clip_stats, value_clipfrac, value_loss
from rlhfkit.ops import (
    entropy_from_logits,
    explained_variance,
    gae,
    kl_estimate,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
)
from rlhfkit.optim import adamw
from rlhfkit.rollout import (
    decode_responses,
    encode_prompts,
    generate,
    position_ids_from_mask,
    truncate_after_stop,
)

RewardFn = Callable[[list[str], list[str]], Sequence[float]]

# What a run leaves in its --out (besides config.json and report.html, which a new run rewrites).
RUN_DIR_ENTRIES = ("metrics.jsonl", "samples.jsonl", "checkpoints", "policy", "stopped.json")

# The learning rate of a critic that is only a value head (on the policy trunk, or on the reward
# model's frozen trunk), as a multiple of the policy's, unless --value-head-lr-scale says
# otherwise (measured in docs/ppo.md). A separate critic backbone trains with its head at 1×.
HEAD_LR_MULTIPLIER = 10.0
_HEAD_ONLY_CRITICS = ("head", "frozen-reward-model", "frozen-reward-model+head")

# Decay per update of the value head's running return statistics (``value_norm``): they follow the
# rising reward over about ten updates; debiased, so the first batch counts fully.
RETURN_STATS_DECAY = 0.9


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
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
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
    lr_schedule: Literal["linear", "constant"] = "linear"
    """Learning-rate schedule over updates."""
    adam_eps: float = 1e-5
    """Adam epsilon (see docs/ppo.md on PyTorch vs TensorFlow Adam)."""
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

    seed: int = 0
    """Random seed (each process samples with seed + rank)."""
    save_every: int = 0
    """Checkpoint every N updates in OUT/checkpoints/step-N (0 = no intermediate checkpoints)."""
    keep_checkpoints: int = 2
    """How many newest checkpoints to keep."""
    resume: bool = False
    """Continue from the newest checkpoint in --out."""
    overwrite: bool = False
    """Start afresh in an --out that holds a previous run, deleting its logs, samples,
    checkpoints, policy and stop record (without it, or --resume, such an --out is refused)."""
    sample_every: int = 10
    """Write sample completions to samples.jsonl every N updates (0 = never)."""
    num_samples: int = 4
    """Completions written per sampling."""
    max_bad_updates: int = 3
    """Stop after this many updates in a row with a non-finite reward or loss."""
    hacking_check_every: int = 0
    """Compare current vs initial policy samples every N updates (0 = off); logs hacking/*."""
    hacking_num_prompts: int = 32
    """Fixed prompts (the first of the file) sampled for the hacking monitor."""
    stop_on_hacking: bool = False
    """Stop when the monitor flags something; the last clean check's checkpoint is kept."""
    progress: bool = True
    """Show a progress bar with reward and KL."""

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
            (self.ppo_epochs > 0, "--ppo-epochs must be > 0"),
            (self.response_length > 0, "--response-length must be > 0"),
            (self.temperature > 0, "--temperature must be > 0 (PPO needs sampling)"),
            (0 < self.top_p <= 1.0, "--top-p must be in (0, 1]"),
            (self.kl_coef >= 0, "--kl-coef must be ≥ 0"),
            (self.kl_target is None or self.kl_target > 0, "--kl-target must be > 0"),
            (self.learning_rate > 0, "--learning-rate must be > 0"),
            (
                self.value_head_lr_scale is None or self.value_head_lr_scale > 0,
                "--value-head-lr-scale must be > 0",
            ),
            (self.max_bad_updates > 0, "--max-bad-updates must be > 0"),
            (self.keep_checkpoints > 0, "--keep-checkpoints must be > 0"),
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
_SETTINGS_BEFORE_THEY_EXISTED = {"value_norm": False, "value_head_lr_scale": 1.0}

# Settings that must not change when a run resumes (anything that changes what is trained).
_RESUME_MUST_MATCH = (
    "policy", "reward_model", "reward_fn", "prompts", "batch_size", "num_mini_batches",
    "gradient_accumulation_steps", "ppo_epochs", "response_length", "max_prompt_length",
    "temperature", "top_k", "top_p", "stop_token", "critic", "lora_r", "lora_alpha",
    "lora_target_modules", "dtype", "seed", "kl_estimator", "kl_in_loss", "total_episodes",
    "learning_rate", "lr_schedule", "value_norm", "value_head_lr_scale",
)  # fmt: skip


def lora_targets(spec: str | None, model_type: str) -> list[str] | str | None:
    """LoRA's target modules: the comma-separated names given, else PEFT's default for the model
    type, else (a type PEFT has no default for, such as Phi-3 with its fused ``qkv_proj``) every
    linear layer but the output head (PEFT's ``"all-linear"``)."""
    if spec:
        return spec.split(",")
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

    return None if model_type in known else "all-linear"


# ------------------------------------------------------------------------------- reward sources


def load_reward_fn(spec: str) -> RewardFn:
    """Resolve ``FILE.py:NAME`` or ``module:NAME`` to a callable."""
    if ":" not in spec:
        raise ConfigError(f"reward function {spec!r}: expected FILE.py:NAME or module:NAME")
    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"reward function file not found: {path}")
        mod_name = f"rlhfkit_reward_fn_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"{path}: cannot be imported as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"reward function {spec!r}: cannot import {target!r} ({e})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"reward function {spec!r}: {target} has no callable named {name!r}")
    return fn


def call_reward_fn(
    fn: RewardFn, prompts: list[str], responses: list[str], what: str
) -> torch.Tensor:
    """Call a reward function and check it returned one number per response."""
    values = fn(list(prompts), list(responses))
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().reshape(-1).tolist()
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must return a list of numbers") from None
    if len(values) != len(responses):
        raise ConfigError(f"{what} returned {len(values)} values for {len(responses)} responses")
    return torch.tensor(values, dtype=torch.float32)


# ------------------------------------------------------------------------------------- prompts


class PromptSampler:
    """Global batches of prompt indices: a fresh seeded permutation each pass over the data.

    The permutation depends only on (seed, epoch), never on the global RNG, so the data position
    ``(epoch, cursor)`` is all a checkpoint needs to continue exactly where the run stopped.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.epoch, self.cursor = 0, 0

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next_batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            perm = self._perm(self.epoch)
            take = min(size - len(out), self.n - self.cursor)
            out += perm[self.cursor : self.cursor + take].tolist()
            self.cursor += take
            if self.cursor == self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "n": self.n}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n"] != self.n:
            raise ConfigError(
                f"the prompts file changed: {self.n} prompts, checkpoint has {state['n']}"
            )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def _read_prompts(path: str) -> list[Prompt]:
    from rlhfkit.data.prompts import read_prompt_inputs

    return read_prompt_inputs(path)


# ------------------------------------------------------------------------------------- trainer


@dataclass
class Rollout:
    """One batch of experience (local to this process). Shapes: B rows, P prompt, R response."""

    prompts: list[str]
    texts: list[str]
    query_responses: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R)
    position_ids: torch.Tensor  # (B, P + R)
    responses: torch.Tensor  # (B, R)
    response_mask: torch.Tensor  # (B, R) float
    has_stop: torch.Tensor  # (B,) bool
    scores: torch.Tensor  # (B,)
    critic_hidden: torch.Tensor | None = None  # (B, R + 1, H): a frozen critic trunk's, cached


class PPOTrainer:
    """Holds the models, optimizer and state of one PPO run; ``train()`` runs it.

    ``reward_fn`` / ``reward_model`` / ``gold_reward_fn`` may be given as Python objects instead of
    paths in the config (a callable ``fn(prompts, responses) -> list[float]``, a ``RewardModel``).
    ``hacking_monitor`` replaces ``rlhfkit.hacking.HackingMonitor`` (same constructor).
    """

    def __init__(
        self,
        config: PPOConfig,
        *,
        reward_fn: RewardFn | None = None,
        reward_model: Any | None = None,
        gold_reward_fn: RewardFn | None = None,
        hacking_monitor: Callable[..., Any] | None = None,
    ):
        from accelerate.utils import set_seed
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.config = cfg = config
        self.out = Path(cfg.out)
        # Fail on a model path that cannot work before anything is read, loaded or written.
        check_model_source(cfg.policy, "--policy")
        if cfg.reward_model is not None and reward_model is None:
            check_model_source(cfg.reward_model, "--reward-model")
        self.accelerator = acc = make_accelerator()
        self.device = acc.device
        # Refuse to mix two runs in one OUT (a later --resume would take the newest checkpoint,
        # whichever run wrote it), before any model is loaded.
        clear_previous_run(
            self.out, RUN_DIR_ENTRIES,
            resume=cfg.resume, overwrite=cfg.overwrite, delete=acc.is_main_process,
        )  # fmt: skip
        acc.wait_for_everyone()
        self.is_main = acc.is_main_process

        # Batch sizes: global batch -> per process -> minibatch -> micro-batch, each dividing exactly.
        world = acc.num_processes
        if cfg.batch_size % world:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} is not divisible by {world} processes"
            )
        self.local_batch = cfg.batch_size // world
        if self.local_batch % cfg.num_mini_batches:
            raise ConfigError(
                f"per-process batch {self.local_batch} is not divisible by --num-mini-batches {cfg.num_mini_batches}"
            )
        self.mini_batch = self.local_batch // cfg.num_mini_batches
        if self.mini_batch % cfg.gradient_accumulation_steps:
            raise ConfigError(
                f"minibatch {self.mini_batch} is not divisible by --gradient-accumulation-steps {cfg.gradient_accumulation_steps}"
            )
        self.micro_batch = self.mini_batch // cfg.gradient_accumulation_steps

        # Prompts and reward sources (fail on bad input before loading any model). A prompt is
        # text or a conversation: the policy and a reward model each render it their own way
        # (rlhfkit.chat); reward functions, samples and the hacking monitor read its text.
        self.prompt_inputs = _read_prompts(cfg.prompts)
        self.prompts = [as_text(p) for p in self.prompt_inputs]
        self._input_of_text = dict(zip(self.prompts, self.prompt_inputs, strict=True))
        self.sampler = PromptSampler(len(self.prompts), cfg.seed)
        self.reward_fn = reward_fn or (load_reward_fn(cfg.reward_fn) if cfg.reward_fn else None)
        self.gold_reward_fn = gold_reward_fn or (
            load_reward_fn(cfg.gold_reward_fn) if cfg.gold_reward_fn else None
        )
        self.reward_model = reward_model
        if self.reward_model is None and cfg.reward_model is not None:
            from rlhfkit.models import RewardModel

            self.reward_model = RewardModel.from_pretrained(
                cfg.reward_model, trained=True, option="--reward-model"
            )
            fuse_activations(self.reward_model.model)  # ours: same function, one kernel
        if self.reward_model is not None:
            self.reward_model.model.to(self.device)
        if self.reward_model is None and self.reward_fn is None:
            raise ConfigError("give --reward-model and/or --reward-fn")

        # Models: same seed on every process so value heads start identical.
        set_seed(cfg.seed)
        dtype = getattr(torch, cfg.dtype)
        policy, self.tokenizer = load_causal_lm(cfg.policy, "--policy", dtype=dtype)
        self.chat = use_chat_template(
            cfg.chat_template, self.tokenizer, is_conversational(self.prompt_inputs),
            f"--policy {cfg.policy}",
        )  # fmt: skip
        extra_stop: list[int] = []
        if cfg.stop_token is not None:
            sid = self.tokenizer.convert_tokens_to_ids(cfg.stop_token)
            if sid is None or sid == self.tokenizer.unk_token_id:
                raise ConfigError(
                    f"--stop-token {cfg.stop_token!r} is not a token of the policy's vocabulary"
                )
            extra_stop.append(int(sid))
        self.stop_ids = stop_token_ids(self.tokenizer, policy, extra_stop)
        self.pad_id = choose_pad_id(self.tokenizer, self.stop_ids, embedding_rows(policy))
        disable_dropout(policy)
        fuse_activations(policy)  # also the reference's: it is copied from the policy below
        if cfg.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        if cfg.lora_r > 0:
            # Reference = the same model with adapters disabled: no second copy in memory.
            from peft import LoraConfig, get_peft_model

            targets = lora_targets(cfg.lora_target_modules, policy.config.model_type)
            policy = get_peft_model(
                policy,
                LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                           target_modules=targets, task_type="CAUSAL_LM"),
            )  # fmt: skip
            self.ref_model = None
        else:
            self.ref_model = copy.deepcopy(policy).to(self.device).eval().requires_grad_(False)
        self.critic_kind = self._resolve_critic()
        self.critic_trunk = None  # frozen-reward-model(+head): the reward model's own trunk
        if self.critic_kind.startswith("frozen-reward-model"):
            rm_model = self.reward_model.model
            plus_head = (
                hidden_size_of(policy.config) if self.critic_kind.endswith("+head") else None
            )
            value_head, critic_backbone = value_head_from_score(rm_model, dtype, plus_head), None
            self.critic_trunk = trunk_of(rm_model)
        else:
            value_head, critic_backbone = build_critic(
                self.critic_kind, policy, cfg.policy, cfg.reward_model, dtype
            )
        model = ActorCritic(policy, value_head, critic_backbone)
        head_params = {id(p) for p in value_head.parameters()}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_params]
        head_lr = cfg.learning_rate * cfg.value_head_lr_multiplier(self.critic_kind)
        groups = [{"params": rest}, {"params": list(value_head.linear.parameters()), "lr": head_lr}]
        if value_head.policy_linear is not None:  # a fresh layer on the policy trunk
            # Its own group (checkpoints of runs whose two layers trained at different rates
            # keep them), at the rate of a head on the policy trunk.
            groups.append(
                {"params": list(value_head.policy_linear.parameters()),
                 "lr": cfg.learning_rate * cfg.value_head_lr_multiplier("head")}
            )  # fmt: skip
        self.optimizer = adamw(
            groups,
            lr=cfg.learning_rate,
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        # The scheduler is stepped once per update by us (not prepared: Accelerate would step it
        # once per process).
        n_updates = cfg.num_updates
        if cfg.lr_schedule == "linear":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda u: max(0.0, 1.0 - u / n_updates)
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda u: 1.0)
        self.model, self.optimizer = acc.prepare(model, self.optimizer)

        self.kl_ctl = (
            AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if cfg.kl_target is not None
            else FixedKLController(cfg.kl_coef)
        )
        self.step = 0
        self.episode = 0
        self.bad_in_a_row = 0
        self.nonfinite_total = 0
        self.last_good_checkpoint: str | None = None
        self.monitor = None
        self.monitor_state: dict[str, Any] | None = None
        self._monitor_factory = hacking_monitor

        if cfg.resume:
            self._resume()
        # Different sampling seed per process (after the models are built identically).
        if not cfg.resume or self._resumed_from is None:
            set_seed(cfg.seed, device_specific=True)

    def _resolve_critic(self) -> str:
        """``--critic`` as trained: ``auto`` becomes ``frozen-reward-model+head`` when the reward
        model reads the policy's token ids as the same tokens, else ``head`` (a reward model of
        another family, with its own tokenizer, scores the decoded text but cannot read the
        policy's tokens). The critics built from the reward model need such a reward model."""
        kind, rm = self.config.critic, self.reward_model
        usable = hasattr(rm, "model") and hasattr(rm, "tokenizer")
        same_tokens = usable and reads_same_tokens(self.tokenizer, rm.tokenizer)
        if kind == "auto":
            return "frozen-reward-model+head" if same_tokens else "head"
        if kind.startswith(("frozen-reward-model", "reward-model")) and not usable:
            raise ConfigError(f"--critic {kind} needs --reward-model")
        if kind.startswith(("frozen-reward-model", "reward-model")) and not same_tokens:
            raise ConfigError(
                f"--critic {kind}: the reward model's tokenizer does not read the policy's token "
                "ids as the same tokens; use --critic head or policy"
            )
        return kind

    # ---------------------------------------------------------------------------- main loop

    def train(self) -> dict[str, Any]:
        """Run every update; returns ``{"stopped": None | "hacking", "step", "episode", ...}``."""
        cfg, acc = self.config, self.accelerator
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            # The settings as given, and the critic as trained (what --critic auto became).
            write_json(
                self.out / "config.json",
                {**dataclasses.asdict(cfg), "critic_resolved": self.critic_kind,
                 "chat_template_resolved": self.chat, "stop_token_ids": self.stop_ids,
                 "pad_token_id": self.pad_id},
            )  # fmt: skip
            if self._resumed_from is None:
                # A fresh run into a used directory starts its own logs (they are appended to).
                for name in ("metrics.jsonl", "samples.jsonl"):
                    (self.out / name).unlink(missing_ok=True)
        logger = MetricsLogger(self.out / "metrics.jsonl", enabled=self.is_main)
        if cfg.hacking_check_every > 0 and self.monitor is None:
            self._start_monitor()
        progress = self._progress_bar()
        stopped: str | None = None
        last_metrics: dict[str, Any] = {}
        try:
            while self.step < cfg.num_updates:
                metrics = self._one_update()
                # 8. log, sample, check for hacking, checkpoint
                t0 = time.perf_counter()
                if cfg.hacking_check_every > 0 and self.step % cfg.hacking_check_every == 0:
                    flagged = self._check_hacking(metrics)
                    if flagged and cfg.stop_on_hacking:
                        stopped = "hacking"
                metrics["time/hacking"] = time.perf_counter() - t0
                logger.log(metrics)
                last_metrics = metrics
                if progress is not None:
                    progress.update(
                        self._task, completed=self.step,
                        info=f"reward {metrics.get('objective/scores', float('nan')):.3f}  "
                             f"kl {metrics.get('objective/kl', float('nan')):.3f}",
                    )  # fmt: skip
                if stopped:
                    break
                if self.bad_in_a_row >= cfg.max_bad_updates:
                    where = self.last_good_checkpoint or "none was saved (use --save-every)"
                    raise TrainingStopped(
                        f"{self.bad_in_a_row} updates in a row had a non-finite reward or loss "
                        f"(nothing was applied to the weights); stopping. Last good checkpoint: {where}"
                    )
                clean_check = (
                    cfg.stop_on_hacking
                    and cfg.hacking_check_every > 0
                    and self.step % cfg.hacking_check_every == 0
                )
                periodic = cfg.save_every > 0 and self.step % cfg.save_every == 0
                if (periodic or clean_check) and self.bad_in_a_row == 0:
                    self.save_checkpoint()
                    kill_point("after-checkpoint", self.step)
        finally:
            logger.close()
            if progress is not None:
                progress.stop()
        if stopped == "hacking":
            where = self.last_good_checkpoint or "none (the first check flagged)"
            if self.is_main:
                write_json(self.out / "stopped.json", {
                    "reason": "hacking", "step": self.step, "last_good_checkpoint": where,
                    "warning": self.last_hacking_warning,
                })  # fmt: skip
                warnings.warn(
                    f"stopped at update {self.step}: the hacking monitor flagged the policy; "
                    f"last good checkpoint: {where}",
                    stacklevel=2,
                )
        else:
            self.save_policy(self.out / "policy")
        acc.wait_for_everyone()
        return {"stopped": stopped, "step": self.step, "episode": self.episode, **last_metrics}

    def _one_update(self) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        times: dict[str, float] = {}
        t_start = time.perf_counter()
        beta = self.kl_ctl.value
        unwrapped: ActorCritic = acc.unwrap_model(self.model)

        # 1. take a batch of prompts: the same global batch on every process, each takes its slice
        global_idx = self.sampler.next_batch(cfg.batch_size)
        rank = acc.process_index
        local_idx = global_idx[rank * self.local_batch : (rank + 1) * self.local_batch]
        prompts = [self.prompt_inputs[i] for i in local_idx]

        # 2. generate responses (KV cache, temperature sampling) and truncate after the stop token
        t0 = time.perf_counter()
        roll = self._sample(unwrapped.policy, prompts)
        times["time/generate"] = time.perf_counter() - t0

        # 3. score: reward model and/or reward function, missing-EOS penalty, optional clipping
        t0 = time.perf_counter()
        scores, score_parts = self._score(prompts, roll.texts, roll.has_stop)
        if inject_nan("reward", self.step + 1):
            scores = torch.where(
                torch.arange(len(scores), device=scores.device) == 0, float("nan"), scores
            )
        roll.scores = scores
        times["time/score"] = time.perf_counter() - t0

        # A non-finite score on any process skips the whole update on every process.
        finite = torch.tensor(float(torch.isfinite(scores).all()), device=self.device)
        if acc.reduce(finite, "min").item() < 1:
            return self._skipped_update(times, t_start, "a reward was NaN or infinite")

        # 4. logprobs of policy and reference on the sampled tokens (temperature applied), KL,
        #    per-token rewards; 5. values
        t0 = time.perf_counter()
        mask = roll.response_mask  # (B, R)
        logprobs, ref_logprobs, values = self._rollout_forward(unwrapped, roll)  # (B, R) each
        kl = kl_estimate(logprobs, ref_logprobs, cfg.kl_estimator) * mask  # (B, R)
        non_score_reward = -beta * kl  # (B, R)
        rewards = torch.zeros_like(logprobs) if cfg.kl_in_loss else non_score_reward.clone()
        last = (mask.sum(1) - 1).long()  # (B,) index of the last real token
        rewards[torch.arange(rewards.shape[0]), last] += scores  # the score pays at the last token
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)

        # 5. GAE (γ, λ) and advantages whitened under the mask
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)  # (B, R)
        advantages = masked_whiten(advantages, mask)
        value_scale = self._update_return_stats(unwrapped, returns, mask)
        times["time/forward"] = time.perf_counter() - t0

        # 6. PPO epochs over shuffled minibatches
        t0 = time.perf_counter()
        train_stats, skipped_steps = self._ppo_epochs(
            roll, logprobs, ref_logprobs, values, advantages, returns, beta, value_scale
        )
        times["time/update"] = time.perf_counter() - t0
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()

        # 7. update the KL controller with this batch's mean KL per response
        seq_kl = kl.sum(1)  # (B,)
        means = {
            "objective/kl": seq_kl.mean(),
            "objective/entropy": (-logprobs * mask).sum(1).mean(),
            "objective/non_score_reward": non_score_reward.sum(1).mean(),
            "objective/scores": scores.mean(),
            "val/explained_variance": explained_variance(values, returns, mask),
            "val/return_std": unwrapped.value_head.return_std.detach().clone(),
            "response/length_mean": mask.sum(1).mean(),
            "response/no_eos_frac": (~roll.has_stop).float().mean(),
            **{k: v.mean() for k, v in score_parts.items()},
            **train_stats,
        }
        keys = list(means)
        reduced = acc.reduce(torch.stack([means[k].float().to(self.device) for k in keys]), "mean")
        metrics: dict[str, Any] = {k: float(v) for k, v in zip(keys, reduced.tolist(), strict=True)}
        n_eos = (roll.responses == self.tokenizer.eos_token_id).logical_and(mask.bool()).sum()
        metrics["val/num_eos_tokens"] = int(acc.reduce(n_eos.to(self.device), "sum").item())
        metrics["objective/kl_coef"] = beta
        # β·KL uses the same estimator as the reward, so rlhf_reward = scores − β·kl exactly.
        metrics["objective/rlhf_reward"] = (
            metrics["objective/scores"] + metrics["objective/non_score_reward"]
        )
        self.kl_ctl.update(metrics["objective/kl"], cfg.batch_size)

        self.step += 1
        self.episode += cfg.batch_size
        skipped_steps = int(
            acc.reduce(torch.tensor(skipped_steps, device=self.device), "max").item()
        )
        if skipped_steps:
            self.nonfinite_total += 1
            self.bad_in_a_row += 1
        else:
            self.bad_in_a_row = 0
        if cfg.sample_every > 0 and self.step % cfg.sample_every == 0:
            self._write_samples(roll, seq_kl)
        times["time/total"] = time.perf_counter() - t_start
        times["time/episodes_per_second"] = cfg.batch_size / times["time/total"]
        return {
            "step": self.step,
            "episode": self.episode,
            "lr": lr,
            **metrics,
            "update/skipped_steps": skipped_steps,
            "update/skipped": 0,
            "update/nonfinite_total": self.nonfinite_total,
            **times,
        }

    # ------------------------------------------------------------------------- the steps

    @torch.no_grad()
    def _sample(self, policy, prompts: list[Prompt]) -> Rollout:
        cfg = self.config
        rendered = [render_prompt(self.tokenizer, p, self.chat) for p in prompts]
        prompt_ids, prompt_mask = encode_prompts(
            self.tokenizer, rendered, self.pad_id, cfg.max_prompt_length, self.chat
        )  # (B, P)
        prompt_ids, prompt_mask = prompt_ids.to(self.device), prompt_mask.to(self.device)
        raw = generate(
            policy,
            prompt_ids,
            prompt_mask,
            cfg.response_length,
            cfg.temperature,
            self.pad_id,
            self.stop_ids,
            cfg.top_k,
            cfg.top_p,
        )  # fmt: skip  (B, R)
        responses, response_mask, has_stop = truncate_after_stop(raw, self.stop_ids, self.pad_id)
        query_responses = torch.cat([prompt_ids, responses], dim=1)  # (B, P + R)
        attention_mask = torch.cat([prompt_mask, response_mask], dim=1)  # (B, P + R)
        return Rollout(
            prompts=[as_text(p) for p in prompts],
            texts=decode_responses(self.tokenizer, responses, response_mask),
            query_responses=query_responses,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            responses=responses,
            response_mask=response_mask.float(),
            has_stop=has_stop,
            scores=torch.empty(0),
        )

    def _score(
        self, prompts: list[Prompt], texts: list[str], has_stop: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scores (B,) on the device, plus the separate parts for logging. The reward model
        re-tokenizes the decoded text with its own tokenizer (and its own chat template, if it
        was trained on conversations); reward functions get the prompts' text."""
        cfg = self.config
        parts: dict[str, torch.Tensor] = {}
        scores = torch.zeros(len(texts))
        text_prompts = [as_text(p) for p in prompts]
        if self.reward_model is not None:
            rm = self.reward_model.score(prompts, texts).float().cpu()
            parts["objective/rm_scores"] = rm
            scores = scores + rm
        if self.reward_fn is not None:
            fn = call_reward_fn(self.reward_fn, text_prompts, texts, "the reward function")
            parts["objective/fn_scores"] = fn
            scores = scores + fn
        if len(parts) == 1:
            parts = {}  # a single source is objective/scores itself
        if self.gold_reward_fn is not None:
            parts["objective/gold_scores"] = call_reward_fn(
                self.gold_reward_fn, text_prompts, texts, "the gold reward function"
            )
        if cfg.reward_clip is not None:
            scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~has_stop.cpu()).float()
        return scores.to(self.device), {k: v.to(self.device) for k, v in parts.items()}

    @torch.no_grad()
    def _rollout_forward(
        self, unwrapped: ActorCritic, roll: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Policy logprobs, reference logprobs and values on the response tokens, in batches."""
        cfg = self.config
        R = cfg.response_length
        B = roll.responses.shape[0]
        step = cfg.forward_batch_size or B
        logprobs, ref_logprobs, values, hiddens = [], [], [], []
        for s in range(0, B, step):
            rows = slice(s, s + step)
            ids, am, pos = (
                roll.query_responses[rows],
                roll.attention_mask[rows],
                roll.position_ids[rows],
            )
            tokens = roll.responses[rows]
            # keep R + 1 positions: position P-1 predicts the first response token; the last
            # position predicts nothing and is dropped.
            hidden = None
            if self.critic_trunk is not None:  # computed once here, reused by every PPO epoch
                hidden = self.critic_trunk(
                    input_ids=ids, attention_mask=am, position_ids=pos, use_cache=False
                ).last_hidden_state[:, -(R + 1) :]  # (b, R + 1, H)
                hiddens.append(hidden)
            logits, v = unwrapped(ids, am, pos, keep=R + 1, critic_hidden=hidden)
            logprobs.append(logprobs_from_logits(logits[:, :-1], tokens, cfg.temperature))
            values.append(v[:, :-1].float())
            ref_logits = self._ref_logits(unwrapped, ids, am, pos, R + 1)
            ref_logprobs.append(logprobs_from_logits(ref_logits[:, :-1], tokens, cfg.temperature))
        mask = roll.response_mask
        roll.critic_hidden = torch.cat(hiddens) if hiddens else None
        return (
            torch.cat(logprobs) * mask,
            torch.cat(ref_logprobs) * mask,
            torch.cat(values) * mask,
        )

    def _ref_logits(self, unwrapped: ActorCritic, ids, am, pos, keep: int) -> torch.Tensor:
        kwargs = dict(
            input_ids=ids, attention_mask=am, position_ids=pos, logits_to_keep=keep, use_cache=False
        )
        if self.ref_model is not None:
            return self.ref_model(**kwargs).logits[:, -keep:]
        with unwrapped.policy.disable_adapter():  # LoRA: the reference is the base model
            return unwrapped.policy(**kwargs).logits[:, -keep:]

    def _update_return_stats(self, unwrapped: ActorCritic, returns, mask) -> float:
        """With ``value_norm``: fold this batch's returns (all processes) into the value head's
        running statistics; returns the factor that puts values in those units (1 without)."""
        if not self.config.value_norm:
            return 1.0
        m = mask.float()
        sums = torch.stack([(returns * m).sum(), (returns.square() * m).sum(), m.sum()])
        total, total_sq, n = self.accelerator.reduce(sums.to(self.device), "sum").tolist()
        head = unwrapped.value_head
        head.update_return_stats(total / max(n, 1.0), total_sq / max(n, 1.0), RETURN_STATS_DECAY)
        return 1.0 / float(head.return_std)

    def _ppo_epochs(
        self, roll, old_logprobs, ref_logprobs, old_values, advantages, returns, beta, value_scale
    ):
        """PPO epochs; returns (mean stats over all micro-batches, optimizer steps skipped).
        ``value_scale`` puts values and returns in the units the value loss is computed in."""
        old_values, returns = old_values * value_scale, returns * value_scale
        cfg, acc = self.config, self.accelerator
        R = cfg.response_length
        mask = roll.response_mask
        B = mask.shape[0]
        sums: dict[str, float] = {}
        count = 0
        skipped = 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        for _epoch in range(cfg.ppo_epochs):
            perm = torch.randperm(B, device=self.device)  # shuffled every epoch
            for mb_start in range(0, B, self.mini_batch):
                mb = perm[mb_start : mb_start + self.mini_batch]
                loss_finite = True
                for k, mc_start in enumerate(range(0, self.mini_batch, self.micro_batch)):
                    idx = mb[mc_start : mc_start + self.micro_batch]
                    m = mask[idx]  # (b, R)
                    last_micro = k == cfg.gradient_accumulation_steps - 1
                    sync = contextlib.nullcontext() if last_micro else acc.no_sync(self.model)
                    with sync:
                        logits, values = self.model(
                            roll.query_responses[idx], roll.attention_mask[idx],
                            roll.position_ids[idx], keep=R + 1,
                            critic_hidden=None if roll.critic_hidden is None
                            else roll.critic_hidden[idx],
                        )  # fmt: skip
                        logits = logits[:, :-1]  # (b, R, V)
                        values = values[:, :-1].float() * value_scale  # (b, R)
                        new_logprobs = logprobs_from_logits(
                            logits, roll.responses[idx], cfg.temperature
                        )
                        pg_loss = -ppo_clip_objective(
                            new_logprobs, old_logprobs[idx], advantages[idx], cfg.cliprange, m
                        )
                        vf_loss = value_loss(
                            values, old_values[idx], returns[idx], cfg.cliprange_value, m
                        )
                        loss = pg_loss + cfg.vf_coef * vf_loss
                        if cfg.entropy_coef > 0:
                            entropy = masked_mean(entropy_from_logits(logits, cfg.temperature), m)
                            loss = loss - cfg.entropy_coef * entropy
                        else:
                            with torch.no_grad():
                                entropy = masked_mean(
                                    entropy_from_logits(logits, cfg.temperature), m
                                )
                        if cfg.kl_in_loss:
                            kl_term = masked_mean(
                                kl_estimate(new_logprobs, ref_logprobs[idx], cfg.kl_estimator), m
                            )
                            loss = loss + beta * kl_term
                        if inject_nan("loss", self.step + 1):
                            loss = loss * float("nan")
                        loss_finite &= bool(torch.isfinite(loss))
                        # backward even on a non-finite loss: every process must take part in
                        # the gradient all-reduce; the step is skipped below.
                        acc.backward(loss / cfg.gradient_accumulation_steps)
                    stats = ppo_clip_stats(
                        new_logprobs.detach(), old_logprobs[idx], advantages[idx], cfg.cliprange, m
                    )
                    row = {
                        "policy/approxkl": stats["approxkl"],
                        "policy/clipfrac": stats["clipfrac"],
                        "policy/entropy": entropy.detach(),
                        "val/ratio": stats["ratio_mean"],
                        "val/ratio_var": stats["ratio_var"],
                        "val/clipfrac": value_clipfrac(
                            values.detach(), old_values[idx], returns[idx], cfg.cliprange_value, m
                        ),
                        "loss/policy": pg_loss.detach(),
                        "loss/value": vf_loss.detach(),
                    }
                    for key, val in row.items():
                        sums[key] = sums.get(key, 0.0) + float(val)
                    count += 1
                # Gradients are all-reduced, so the norm is the same on every process and they
                # all agree to skip; the local loss flag is combined for the same reason.
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
                grad_norm = acc.clip_grad_norm_(params, max_norm)
                bad = torch.tensor(float(not loss_finite), device=self.device)
                bad = acc.reduce(bad, "max")
                if bad.item() > 0 or not torch.isfinite(torch.as_tensor(grad_norm)):
                    skipped += 1
                    warnings.warn(
                        f"update {self.step + 1}: non-finite loss or gradient; optimizer step skipped",
                        stacklevel=2,
                    )
                else:
                    self.optimizer.step()
                    kill_point("update", self.step + 1)  # crash tests: weights changed, unsaved
                self.optimizer.zero_grad(set_to_none=True)
        means = {k: torch.tensor(v / max(count, 1)) for k, v in sums.items() if math.isfinite(v)}
        return means, skipped

    def _skipped_update(self, times: dict[str, float], t_start: float, why: str) -> dict[str, Any]:
        """Nothing is trained on this batch: count it and move on (the LR schedule advances)."""
        warnings.warn(f"update {self.step + 1}: {why}; update skipped", stacklevel=2)
        with warnings.catch_warnings():  # "scheduler stepped before optimizer": intended here
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        self.step += 1
        self.episode += self.config.batch_size
        self.nonfinite_total += 1
        self.bad_in_a_row += 1
        times["time/total"] = time.perf_counter() - t_start
        return {
            "step": self.step,
            "episode": self.episode,
            "objective/kl_coef": self.kl_ctl.value,
            "update/skipped_steps": 0,
            "update/skipped": 1,
            "update/nonfinite_total": self.nonfinite_total,
            **times,
        }

    def _write_samples(self, roll: Rollout, seq_kl: torch.Tensor) -> None:
        if not self.is_main:
            return
        n = min(self.config.num_samples, len(roll.texts))
        path = self.out / "samples.jsonl"
        with open(path, "a", encoding="utf-8") as f:
            for i in range(n):
                f.write(json.dumps({
                    "step": self.step, "prompt": roll.prompts[i], "response": roll.texts[i],
                    "score": float(roll.scores[i]), "kl": float(seq_kl[i]),
                }, ensure_ascii=False) + "\n")  # fmt: skip

    # ------------------------------------------------------------------------- hacking monitor

    def _monitor_prompts(self) -> list[str]:
        return self.prompts[: self.config.hacking_num_prompts]

    def _sample_monitor_texts(self) -> tuple[list[str], list[bool]]:
        """Sample the current policy on the fixed monitor prompts (same temperature and length)."""
        policy = self.accelerator.unwrap_model(self.model).policy
        prompts = [self._input_of_text[p] for p in self._monitor_prompts()]
        texts: list[str] = []
        has_eos: list[bool] = []
        for s in range(0, len(prompts), self.local_batch):
            roll = self._sample(policy, prompts[s : s + self.local_batch])
            texts += roll.texts
            has_eos += roll.has_stop.tolist()
        return texts, has_eos

    def _make_monitor(self, base_texts: list[str], base_has_eos: list[bool]):
        factory = self._monitor_factory
        if factory is None:
            from rlhfkit.hacking import HackingMonitor as factory  # lazy: only when asked for

        extra = {"gold_fn": self.gold_reward_fn} if self.gold_reward_fn is not None else {}
        return factory(
            self._monitor_prompts(), base_texts, base_has_eos=base_has_eos,
            reward_fn=self._monitor_reward_fn(), **extra,
        )  # fmt: skip

    def _monitor_reward_fn(self) -> RewardFn | None:
        def combined(prompts: list[str], responses: list[str]) -> list[float]:
            total = torch.zeros(len(responses))
            if self.reward_model is not None:
                inputs = [self._input_of_text.get(p, p) for p in prompts]
                total += self.reward_model.score(inputs, responses).float().cpu()
            if self.reward_fn is not None:
                total += call_reward_fn(self.reward_fn, prompts, responses, "the reward function")
            return total.tolist()

        return combined

    def _start_monitor(self) -> None:
        """Sample the initial policy on the monitor prompts (main process only)."""
        if not self.is_main:
            return
        texts, has_eos = self._sample_monitor_texts()
        self.monitor_state = {"base_texts": texts, "base_has_eos": has_eos}
        self.monitor = self._make_monitor(texts, has_eos)

    def _check_hacking(self, metrics: dict[str, Any]) -> bool:
        """Run the monitor; log hacking/* into ``metrics``; every process learns the verdict."""
        from accelerate.utils import broadcast_object_list

        verdict = [False]
        self.last_hacking_warning = None
        if self.is_main and self.monitor is not None:
            texts, has_eos = self._sample_monitor_texts()
            report = self.monitor.check(texts, tuned_has_eos=has_eos, step=self.step)
            metrics.update({k: float(v) for k, v in report.metrics.items()})
            # anything flagged counts: a token, a drift signal (e.g. answers collapsing to nothing),
            # a probe or proxy-vs-gold divergence; a replacement monitor may only list tokens
            if report.flagged or getattr(report, "suspected", False):
                verdict[0] = True
                self.last_hacking_warning = report.warning or f"flagged: {report.flagged}"
                warnings.warn(
                    f"update {self.step}: hacking monitor: {self.last_hacking_warning}",
                    stacklevel=2,
                )
        if self.accelerator.num_processes > 1:
            broadcast_object_list(verdict)
        return bool(verdict[0])

    # ------------------------------------------------------------------------- saving / resume

    def save_policy(self, path: str | Path) -> None:
        """The tuned policy as a plain model (LoRA adapters merged) + tokenizer, atomically."""
        from rlhfkit.io import atomic_dir

        self.accelerator.wait_for_everyone()
        if not self.is_main:
            return
        policy = self.accelerator.unwrap_model(self.model).policy
        if self.config.lora_r > 0:
            policy = copy.deepcopy(policy).merge_and_unload()
        with atomic_dir(path) as tmp:
            policy.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)

    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "episode": self.episode,
            "data": self.sampler.state_dict(),
            "kl_controller": {"kind": type(self.kl_ctl).__name__, **self.kl_ctl.state_dict()},
            "bad_in_a_row": self.bad_in_a_row,
            "nonfinite_total": self.nonfinite_total,
            "world_size": self.accelerator.num_processes,
            "monitor": self.monitor_state,
            "config": self._settings_as_trained(),
        }

    def _settings_as_trained(self) -> dict[str, Any]:
        """The settings, with ``--critic`` as trained (``auto`` resolved): what a checkpoint
        records, and what resuming compares."""
        return {**dataclasses.asdict(self.config), "critic": self.critic_kind}

    def save_checkpoint(self) -> Path | None:
        """``OUT/checkpoints/step-N/`` with everything needed to resume (see rlhfkit.checkpoint)."""
        from accelerate.utils import gather_object

        acc = self.accelerator
        rng = gather_object([capture_rng_state()])  # one entry per process, rank order
        acc.wait_for_everyone()
        path = None
        if self.is_main:
            unwrapped = acc.unwrap_model(self.model)
            path = save_checkpoint(
                self.out, self.step,
                state=self.trainer_state(),
                models={"policy": unwrapped.policy},
                tokenizers={"policy": self.tokenizer},
                tensors={"critic": unwrapped.critic_state_dict()},
                objects={"optimizer": self.optimizer.state_dict(),
                         "scheduler": self.scheduler.state_dict(), "rng": rng},
                keep_last=self.config.keep_checkpoints,
            )  # fmt: skip
            self.last_good_checkpoint = str(path)
        acc.wait_for_everyone()
        return path

    _resumed_from: Path | None = None

    def _resume(self) -> None:
        """Load the newest checkpoint in --out (refusing one made with different settings)."""
        acc = self.accelerator
        path = latest_checkpoint(self.out)
        if path is None:
            warnings.warn(
                f"--resume: no checkpoint in {self.out / 'checkpoints'}; starting fresh",
                stacklevel=2,
            )
            return
        ckpt = load_checkpoint(path)
        state = ckpt.state
        # Settings added after a checkpoint was written take the value that run trained with.
        saved_cfg = {**_SETTINGS_BEFORE_THEY_EXISTED, **state.get("config", {})}
        now = self._settings_as_trained()
        diffs = [f"{k}: checkpoint {saved_cfg.get(k)!r}, now {now[k]!r}"
                 for k in _RESUME_MUST_MATCH if saved_cfg.get(k) != now[k]]  # fmt: skip
        if state.get("world_size") != acc.num_processes:
            diffs.append(
                f"processes: checkpoint {state.get('world_size')}, now {acc.num_processes}"
            )
        if diffs:
            raise ConfigError(f"cannot resume from {path}: settings differ — " + "; ".join(diffs))
        unwrapped: ActorCritic = acc.unwrap_model(self.model)
        self._load_policy_weights(unwrapped, ckpt.model_dir("policy"))
        unwrapped.load_critic_state_dict(
            {k: v.to(self.device) for k, v in ckpt.tensors("critic").items()}
        )
        self.optimizer.load_state_dict(ckpt.object("optimizer"))
        self.scheduler.load_state_dict(ckpt.object("scheduler"))
        self.sampler.load_state_dict(state["data"])
        kl_state = dict(state["kl_controller"])
        kl_state.pop("kind", None)
        self.kl_ctl.load_state_dict(kl_state)
        self.step, self.episode = int(state["step"]), int(state["episode"])
        self.bad_in_a_row = int(state["bad_in_a_row"])
        self.nonfinite_total = int(state["nonfinite_total"])
        self.last_good_checkpoint = str(path)
        if state.get("monitor"):
            self.monitor_state = state["monitor"]
            if self.is_main:
                self.monitor = self._make_monitor(
                    self.monitor_state["base_texts"], self.monitor_state["base_has_eos"]
                )
        restore_rng_state(ckpt.object("rng")[acc.process_index])
        if self.is_main:
            # Lines logged after the checkpoint belong to updates that will be redone.
            for name in ("metrics.jsonl", "samples.jsonl"):
                _truncate_log(self.out / name, self.step)
        self._resumed_from = path

    def _load_policy_weights(self, unwrapped: ActorCritic, directory: Path) -> None:
        if self.config.lora_r > 0:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(
                unwrapped.policy, load_file(str(directory / "adapter_model.safetensors"))
            )
            return
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(
            directory, dtype=getattr(torch, self.config.dtype)
        )
        unwrapped.policy.load_state_dict(loaded.state_dict())

    def _progress_bar(self):
        if not (self.is_main and self.config.progress):
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("ppo"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), transient=False,
        )  # fmt: skip
        self._task = progress.add_task(
            "ppo", total=self.config.num_updates, completed=self.step, info=""
        )
        progress.start()
        return progress

    last_hacking_warning: str | None = None


def _truncate_log(path: Path, step: int) -> None:
    """Keep only the lines of a JSONL log whose ``step`` is ≤ ``step`` (atomically)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        if isinstance(obj, dict) and obj.get("step", 0) <= step:
            kept.append(line)
    with atomic_open(path) as f:
        f.write("".join(line + "\n" for line in kept))
