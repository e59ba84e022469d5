"""``rlhfkit plan``: predict the memory per device of a ``ppo`` or ``train-rm`` run from the models'
configs, before any weight is loaded or any GPU rented (:mod:`rlhfkit.runtime.plan`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from rlhfkit.cli._common import parse_config


@dataclass
class PlanConfig:
    """Predict the bytes per device of a run: weights, gradients, optimizer state, activations."""

    model: str
    """the policy (ppo) or the reward model's backbone (train-rm): a model directory, its
    config.json, or a hub name"""
    processes: int = 1
    """number of processes (devices) the run is launched on"""
    fsdp: bool = False
    """the run shards with --fsdp (each process holds 1/N of weights, gradients, optimizer state)"""
    stage: Literal["ppo", "train-rm"] = "ppo"
    """which command to plan for"""
    reward_model: str | None = None
    """ppo: the reward model (directory, config.json or hub name); default: --model's architecture
    with a one-output head; 'none' for a reward function"""
    critic: Literal[
        "auto", "head", "frozen-reward-model", "frozen-reward-model+head", "policy", "reward-model"
    ] = "auto"
    """ppo's --critic"""
    lora_r: int = 0
    """LoRA rank (ppo --lora-r; 0 = full fine-tuning)"""
    lora_target_modules: str | None = None
    """ppo --lora-target-modules (None: PEFT's default for the architecture)"""
    batch_size: int = 64
    """global batch (ppo: rollouts per update; train-rm: prompts per step)"""
    num_mini_batches: int = 1
    """ppo --num-mini-batches"""
    gradient_accumulation_steps: int = 1
    """micro-batches per optimizer step"""
    prompt_length: int = 128
    """tokens of a prompt (train-rm: of prompt + response, with --response-length 0)"""
    response_length: int = 32
    """new tokens per response (ppo --response-length)"""
    responses_per_prompt: int = 2
    """train-rm: responses per ranking (2 for pairs)"""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """weights' dtype (ppo --dtype); gradients and Adam moments follow it"""
    gradient_checkpointing: bool = False
    """ppo --gradient-checkpointing"""
    device: Literal["cuda", "cpu"] = "cuda"
    """where the run trains: on a cpu, host and device memory are one (loading counts in full)"""
    runtime_gb: float = 0.45
    """GiB a process holds besides the models: Python, torch, transformers, the process group (0.37
    measured on CPU here, ~0.45 in a run of a tiny model); add the CUDA context (~0.5-1) on a GPU"""
    json: bool = False
    """print one JSON document instead of the table"""

    def __post_init__(self) -> None:
        checks = [
            (self.processes >= 1, "--processes must be ≥ 1"),
            (self.batch_size >= 1, "--batch-size must be ≥ 1"),
            (self.lora_r >= 0, "--lora-r must be ≥ 0"),
            (self.num_mini_batches >= 1, "--num-mini-batches must be ≥ 1"),
            (self.gradient_accumulation_steps >= 1, "--gradient-accumulation-steps must be ≥ 1"),
            (self.prompt_length >= 0, "--prompt-length must be ≥ 0"),
            (self.response_length >= 0, "--response-length must be ≥ 0"),
            (self.prompt_length + self.response_length > 0, "a sequence needs at least 1 token"),
            (self.responses_per_prompt >= 2, "--responses-per-prompt must be ≥ 2"),
            (self.runtime_gb >= 0, "--runtime-gb must be ≥ 0"),
            (self.stage == "ppo" or self.lora_r == 0, "--lora-r applies to --stage ppo only"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def main(argv: list[str]) -> int:
    from rlhfkit.runtime.plan import PlanInput, format_plan, plan_memory, read_shape

    cfg = parse_config(PlanConfig, argv, "rlhfkit plan", yaml_config=False)
    if cfg.stage == "train-rm":
        rm = read_shape(cfg.model, "--model", head="score")
        policy = rm
    else:
        policy = read_shape(cfg.model, "--model", cfg.lora_r, cfg.lora_target_modules)
        rm = None
        if (cfg.reward_model or "").lower() != "none":
            name, option = (
                (cfg.reward_model, "--reward-model") if cfg.reward_model else (cfg.model, "--model")
            )
            rm = read_shape(name, option, head="score")
    inp = PlanInput(
        policy=policy, reward_model=rm, processes=cfg.processes, fsdp=cfg.fsdp, stage=cfg.stage,
        critic=cfg.critic, batch_size=cfg.batch_size, num_mini_batches=cfg.num_mini_batches,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        prompt_length=cfg.prompt_length, response_length=cfg.response_length,
        dtype=cfg.dtype, gradient_checkpointing=cfg.gradient_checkpointing,
        responses_per_prompt=cfg.responses_per_prompt, runtime_bytes=int(cfg.runtime_gb * 1024**3),
        device=cfg.device,
    )  # fmt: skip
    plan = plan_memory(inp)
    if cfg.json:
        print(json.dumps({"input": _describe(cfg), **plan.as_json()}, indent=2))
    else:
        print(format_plan(plan, inp))
    return 0


def _describe(cfg: PlanConfig) -> dict[str, object]:
    return {k: v for k, v in vars(cfg).items() if k != "json"}
