"""Building what a PPO run trains: the policy (plus LoRA), the frozen reference, the critic the
config asks for, the optimizer with its learning-rate schedule, and the KL controller; and, with
``--fsdp``, the function that shards each model as it is built."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.chat import Prompt, is_conversational, use_chat_template
from rlhfkit.errors import ConfigError
from rlhfkit.kl import AdaptiveKLController, FixedKLController
from rlhfkit.loading import (
    choose_pad_id,
    disable_dropout,
    embedding_rows,
    fuse_activations,
    load_causal_lm,
    stop_token_ids,
    with_lora_adapters,
)
from rlhfkit.ppo.config import PPOConfig, lora_targets
from rlhfkit.ppo.critic import (
    ActorCritic,
    ValueHead,
    build_critic,
    hidden_size_of,
    reads_same_tokens,
    trunk_of,
    value_head_from_score,
)
from rlhfkit.runtime.fsdp import device_mesh, fsdp_settings, shard
from rlhfkit.runtime.optim import adamw


@dataclass
class PolicySetup:
    """The policy and everything about how it reads and writes text."""

    model: ActorCritic  # policy + critic, one module for one optimizer / one DDP wrapper
    ref_model: Any | None  # None with LoRA: the reference is the adapters-off policy
    tokenizer: Any
    chat: bool  # prompts rendered with the chat template (see rlhfkit.chat)
    stop_ids: list[int]
    pad_id: int
    critic_kind: str  # --critic as trained (auto resolved)
    critic_trunk: Any | None  # frozen-reward-model(+head): the reward model's own trunk


def fsdp_sharder(cfg: PPOConfig, accelerator: Any) -> Callable[..., Any] | None:
    """With ``--fsdp``, ``shard(module, units=())``: moves a module to this process's device and
    shards it (:mod:`rlhfkit.runtime.fsdp`), its sub-models in ``units`` as units of their own;
    None without. Refuses what ``--fsdp`` does not support yet."""
    if not cfg.fsdp:
        return None
    if cfg.hacking_check_every > 0:
        raise ConfigError(
            "--hacking-check-every is not supported with --fsdp yet (the monitor samples on "
            "the main process only); run `rlhfkit detect` on the samples after training"
        )
    device = accelerator.device
    settings = fsdp_settings(accelerator.mixed_precision)
    mesh = device_mesh(device)

    def shard_now(module: Any, units: list[Any] | tuple[Any, ...] = ()) -> Any:
        return shard(module.to(device), mesh, settings, units)

    return shard_now


def resolve_critic(kind: str, tokenizer: Any, reward_model: Any | None) -> str:
    """``--critic`` as trained: ``auto`` becomes ``frozen-reward-model+head`` when the reward
    model reads the policy's token ids as the same tokens, else ``head`` (a reward model of
    another family, with its own tokenizer, scores the decoded text but cannot read the policy's
    tokens). The critics built from the reward model need such a reward model."""
    usable = getattr(reward_model, "model", None) is not None and hasattr(reward_model, "tokenizer")
    same_tokens = usable and reads_same_tokens(tokenizer, reward_model.tokenizer)
    if kind == "auto":
        return "frozen-reward-model+head" if same_tokens else "head"
    if kind.startswith(("frozen-reward-model", "reward-model")) and not usable:
        what = "an ensemble has no one model" if hasattr(reward_model, "members") else "give one"
        raise ConfigError(
            f"--critic {kind} needs a single --reward-model ({what}); use --critic head or policy"
        )
    if kind.startswith(("frozen-reward-model", "reward-model")) and not same_tokens:
        raise ConfigError(
            f"--critic {kind}: the reward model's tokenizer does not read the policy's token "
            "ids as the same tokens; use --critic head or policy"
        )
    return kind


def build_policy(
    cfg: PPOConfig, prompts: list[Prompt], reward_model: Any | None, device: Any,
    shard: Callable[..., Any] | None = None,
) -> PolicySetup:  # fmt: skip
    """Load the policy, choose how it reads prompts (chat template, stop and pad ids), add LoRA or
    copy the reference, and build the critic. Seed the RNG before: value heads start random.

    ``shard(module, units=...)`` (``--fsdp``): applied to the reference as soon as it is copied and
    to policy + critic once built, so that no process holds more than two whole models at once."""
    dtype = getattr(torch, cfg.dtype)
    policy, tokenizer = load_causal_lm(cfg.policy, "--policy", dtype=dtype)
    who = f"--policy {cfg.policy}"
    chat = use_chat_template(cfg.chat_template, tokenizer, is_conversational(prompts), who)
    extra_stop: list[int] = []
    if cfg.stop_token is not None:
        sid = tokenizer.convert_tokens_to_ids(cfg.stop_token)
        if sid is None or sid == tokenizer.unk_token_id:
            raise ConfigError(
                f"--stop-token {cfg.stop_token!r} is not a token of the policy's vocabulary"
            )
        extra_stop.append(int(sid))
    stop_ids = stop_token_ids(tokenizer, policy, extra_stop)
    pad_id = choose_pad_id(tokenizer, stop_ids, embedding_rows(policy))

    disable_dropout(policy)
    fuse_activations(policy)  # also the reference's: it is copied from the policy below
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    if cfg.lora_r > 0:
        # Reference = the same model with adapters disabled: no second copy in memory.
        from peft import LoraConfig

        lora = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
            target_modules=lora_targets(cfg.lora_target_modules, policy.config.model_type),
            task_type="CAUSAL_LM",
        )  # fmt: skip
        policy, ref_model = with_lora_adapters(policy, lora), None
    else:
        ref_model = copy.deepcopy(policy).to(device).eval().requires_grad_(False)
        if shard is not None:
            shard(ref_model)

    critic_kind = resolve_critic(cfg.critic, tokenizer, reward_model)
    critic_trunk = None
    if critic_kind.startswith("frozen-reward-model"):
        rm_model = reward_model.model
        plus_head = hidden_size_of(policy.config) if critic_kind.endswith("+head") else None
        value_head, critic_backbone = value_head_from_score(rm_model, dtype, plus_head), None
        critic_trunk = trunk_of(rm_model)
    else:
        value_head, critic_backbone = build_critic(
            critic_kind, policy, cfg.policy, cfg.reward_model, dtype
        )
    model = ActorCritic(policy, value_head, critic_backbone)
    if shard is not None:  # policy and critic backbone are called on their own too: own units
        shard(model, units=[policy, critic_backbone])
    return PolicySetup(
        model=model,
        ref_model=ref_model,
        tokenizer=tokenizer,
        chat=chat,
        stop_ids=stop_ids,
        pad_id=pad_id,
        critic_kind=critic_kind,
        critic_trunk=critic_trunk,
    )


def build_optimizer(cfg: PPOConfig, model: ActorCritic, critic_kind: str) -> tuple[Any, Any]:
    """AdamW over the policy (and a separate critic), with the value head's layers in groups of
    their own learning rate (docs/ppo.md, "The frozen head's learning rate"); and the schedule,
    stepped once per update by the trainer."""
    value_head: ValueHead = model.value_head
    head_params = {id(p) for p in value_head.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_params]
    head_lr = cfg.learning_rate * cfg.value_head_lr_multiplier(critic_kind)
    groups = [{"params": rest}, {"params": list(value_head.linear.parameters()), "lr": head_lr}]
    if value_head.policy_linear is not None:  # a fresh layer on the policy trunk
        # Its own group (checkpoints of runs whose two layers trained at different rates
        # keep them), at the rate of a head on the policy trunk.
        groups.append(
            {"params": list(value_head.policy_linear.parameters()),
             "lr": cfg.learning_rate * cfg.value_head_lr_multiplier("head")}
        )  # fmt: skip
    optimizer = adamw(
        groups, lr=cfg.learning_rate, eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay
    )
    n_updates = cfg.num_updates
    if cfg.lr_scheduler_type == "linear":
        decay = lambda u: max(0.0, 1.0 - u / n_updates)  # noqa: E731
    else:
        decay = lambda u: 1.0  # noqa: E731
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, decay)


def build_kl_controller(cfg: PPOConfig) -> AdaptiveKLController | FixedKLController:
    """β: adaptive toward ``--kl-target`` when one is given, else fixed at ``--kl-coef``."""
    if cfg.kl_target is not None:
        return AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    return FixedKLController(cfg.kl_coef)
