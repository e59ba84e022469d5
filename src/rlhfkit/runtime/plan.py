"""Memory per device of a PPO or reward-model run, predicted from the models' configs before any
weight is loaded (``rlhfkit plan``).

Parameters are counted exactly: each model is built on the ``meta`` device from its config (no
memory, no weights read) and its tensors' sizes are summed; LoRA adapters are added to it with
PEFT the way ``rlhfkit ppo --lora-r`` adds them (:mod:`rlhfkit.runtime.model_shape`). The rest is arithmetic over what rlhfkit keeps
on each process:

- **weights**: the policy, its frozen reference (none with LoRA: the adapters-off policy is the
  reference), the critic (a value head, or a trained copy of a trunk with ``--critic policy`` /
  ``reward-model``) and the frozen reward model; with ``--fsdp`` each process holds 1/N of each.
- **gradients** and **optimizer** state (AdamW: two moments) of what is trained, 1/N each with
  ``--fsdp``. They are kept in the weights' dtype (torch's AdamW keeps its moments in the
  parameter's dtype).
- **activations** of one training micro-batch (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", section 4: ``17·h`` values per token and layer, plus
  ``2·a·s`` for the attention scores and probabilities under eager attention; SDPA keeps none),
  the response logits and their gradient.
- **generation**: the KV cache of a rollout and, with ``--fsdp``, the rest of the policy, which is
  gathered for the whole rollout (:func:`rlhfkit.runtime.fsdp.gathered`).
- **FSDP working set** in training: the largest unit gathered (a block, or the root with the
  embedding), the next one prefetched, and one unit's unsharded gradients with their
  reduce-scatter buffer; without FSDP on several processes, DDP's gradient buckets (a second copy
  of the gradients).
- **load**: models are loaded whole on each process and sharded right after, so loading holds the
  whole policy and its reference copy in host memory for a moment, and one whole model at a time
  on a GPU (on a CPU, host and device are one memory).
- **runtime**: what a process holds before any model (Python, torch, transformers; the CUDA
  context on a GPU), a constant given with ``--runtime-gb``.

The peak is the largest of three moments: loading, a rollout (weights + KV cache + gathered
policy) and a training step (weights + gradients + optimizer + activations + FSDP working set).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlhfkit.errors import ConfigError
from rlhfkit.runtime.model_shape import ModelShape as ModelShape
from rlhfkit.runtime.model_shape import read_shape as read_shape

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GiB = 1024**3


@dataclass(frozen=True)
class PlanInput:
    """The run to plan for (the options of ``rlhfkit plan``)."""

    policy: ModelShape
    reward_model: ModelShape | None
    processes: int = 1
    fsdp: bool = False
    stage: str = "ppo"
    critic: str = "auto"
    batch_size: int = 64
    num_mini_batches: int = 1
    gradient_accumulation_steps: int = 1
    prompt_length: int = 128
    response_length: int = 32
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    responses_per_prompt: int = 2
    runtime_bytes: int = 0
    device: str = "cuda"
    """cuda (host and device memory are separate) or cpu (one memory: what is loaded counts)."""


@dataclass
class Plan:
    """Bytes per device, by component, and the peak (the largest of the three moments)."""

    components: dict[str, int]
    moments: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(self.moments.values())

    @property
    def peak_moment(self) -> str:
        return max(self.moments, key=self.moments.__getitem__)

    def as_json(self) -> dict[str, Any]:
        return {
            "bytes_per_device": dict(self.components),
            "moments": dict(self.moments),
            "peak_bytes": self.peak,
            "peak_gib": round(self.peak / GiB, 3),
            "peak_moment": self.peak_moment,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Footprint:
    """What one stage keeps per process, before the terms that follow from it (gradients,
    optimizer, activations, FSDP/DDP buffers) are computed."""

    weights: dict[str, int]
    """Bytes of each model's weights held on a process (the components' first rows)."""
    trained: int
    """Parameters that get gradients and optimizer state."""
    act_model: ModelShape
    """The model whose activations a training micro-batch keeps."""
    seq: int
    logit_tokens: int
    """Tokens whose logits (over ``logit_width`` classes) are kept: the responses in PPO."""
    logit_width: int
    generation: int
    """Bytes of a rollout: the KV cache, the gathered policy and the last logits (PPO only)."""
    load: int
    """Bytes on the device while the models are loaded."""
    host_load: int
    """Bytes in host memory while the models are loaded."""


def _micro_batch(p: PlanInput) -> tuple[int, int]:
    """``(local, micro)``: the sequences of a rollout batch on one process, and of one training
    micro-batch (train-rm scores each prompt's responses in one batch)."""
    if p.processes < 1:
        raise ConfigError("--processes must be ≥ 1")
    if p.batch_size % p.processes:
        raise ConfigError(
            f"--batch-size {p.batch_size} is not divisible by --processes {p.processes}"
        )
    local = p.batch_size // p.processes
    per_micro = p.num_mini_batches * p.gradient_accumulation_steps
    if local % per_micro:
        raise ConfigError(
            f"per-process batch {local} is not divisible by --num-mini-batches × "
            f"--gradient-accumulation-steps ({per_micro})"
        )
    micro = local // per_micro
    if p.stage == "train-rm":  # each prompt's responses are scored in one batch
        micro *= p.responses_per_prompt
    return local, micro


def _reward_model_footprint(p: PlanInput, share: Callable[[int], int]) -> _Footprint:
    """train-rm: one model, trained whole; no rollout."""
    rm = p.reward_model
    if rm is None:
        raise ConfigError("train-rm needs the reward model's config (--model)")
    b = DTYPE_BYTES[p.dtype]
    return _Footprint(
        weights={"reward_model": share(rm.params)},
        trained=rm.params,
        act_model=rm,
        seq=p.prompt_length + p.response_length,
        logit_tokens=0,
        logit_width=0,
        generation=0,
        load=rm.params * b,
        host_load=rm.params * b,
    )


def _critic_params(p: PlanInput) -> int:
    """The parameters of ``--critic`` (``auto``: the frozen reward model's trunk with a head when
    there is a reward model, else a head on the policy)."""
    pol, rm = p.policy, p.reward_model
    critic = p.critic
    if critic == "auto":
        critic = "frozen-reward-model+head" if rm is not None else "head"
    if critic in ("frozen-reward-model", "frozen-reward-model+head", "reward-model") and (
        rm is None
    ):
        raise ConfigError(f"--critic {critic} needs a reward model")
    head = pol.hidden + 1
    return {
        "head": head,
        "frozen-reward-model": rm.hidden + 1 if rm else 0,
        "frozen-reward-model+head": (rm.hidden + 1 if rm else 0) + head,
        "policy": pol.params - pol.vocab * pol.hidden + head,  # a trunk of its own
        "reward-model": rm.params if rm else 0,
    }[critic]


def _ppo_footprint(p: PlanInput, share: Callable[[int], int], local: int) -> _Footprint:
    """ppo: the policy, its reference, the critic and the reward model; rollouts and training."""
    pol, rm = p.policy, p.reward_model
    b = DTYPE_BYTES[p.dtype]
    lora = pol.lora_params > 0
    critic_params = _critic_params(p)
    weights = {
        "policy": share(pol.params + pol.lora_params),
        "reference": 0 if lora else share(pol.params),
        "critic": share(critic_params),
        "reward_model": share(rm.params) if rm is not None else 0,
    }
    seq = p.prompt_length + p.response_length
    # A rollout: every process's share of the batch with its KV cache (keys and values per
    # layer and token), and a sharded policy gathered whole for the rollout.
    kv = 2 * pol.layers * local * seq * pol.kv_heads * (pol.hidden // pol.heads) * b
    gathered = (pol.params + pol.lora_params) * b - weights["policy"] if p.fsdp else 0
    # Loading (ppo/setup.py: build_policy): the whole policy is read into host memory and,
    # without LoRA, copied for the reference; each goes to the device whole and is sharded
    # there. On a CPU host and device are one memory and both copies count; on a GPU the
    # device holds one whole model at a time (and the host both).
    host_load = pol.params * b * (1 if lora else 2)
    on_device = host_load if p.device == "cpu" else pol.params * b + weights["reference"]
    return _Footprint(
        weights=weights,
        trained=(pol.lora_params if lora else pol.params) + critic_params,
        act_model=pol,
        seq=seq,
        logit_tokens=p.response_length,
        logit_width=pol.vocab,
        generation=kv + gathered + local * pol.vocab * b,
        load=on_device + weights["reward_model"],
        host_load=host_load,
    )


def _activations(p: PlanInput, f: _Footprint, micro: int) -> int:
    """Bytes of one micro-batch's activations in training."""
    b = DTYPE_BYTES[p.dtype]
    model = f.act_model
    # 17·h values per token and layer (inputs of the norms, projections, MLP and its activation)
    # + 2·a·s attention scores and probabilities (eager attention only); with gradient
    # checkpointing only each block's input is kept (plus one block recomputed).
    scores = 2 * model.heads * f.seq if model.eager_attention else 0
    per_token_layer = 17 * model.hidden + scores
    layers_kept = (
        model.layers * model.hidden + per_token_layer
        if p.gradient_checkpointing
        else model.layers * per_token_layer
    )
    activations = micro * f.seq * layers_kept * b
    # Response logits, their log-softmax and their gradient (3 × B × R × V).
    activations += 3 * micro * f.logit_tokens * f.logit_width * b
    if p.stage == "ppo" and p.critic in ("policy", "reward-model"):
        activations *= 2  # a second trunk runs forward and backward
    return activations


def _working_set(p: PlanInput, f: _Footprint, n: int) -> int:
    """Bytes of FSDP's working set in training, or of DDP's gradient buckets.

    FSDP: a unit gathered, the next prefetched, and one unit's unsharded gradients with their
    reduce-scatter buffer; the largest unit is a block or the root (embedding, final norm, untied
    head). DDP instead keeps a second copy of every gradient in its all-reduce buckets.
    """
    b = DTYPE_BYTES[p.dtype]
    model = f.act_model
    largest_unit = max(model.block_params, model.embedding_params)
    if p.fsdp and n > 1:
        return (3 * largest_unit + model.block_params) * b
    if p.processes > 1:
        return f.trained * b
    return 0


def _notes(p: PlanInput, f: _Footprint) -> list[str]:
    notes = []
    if p.policy.lora_params > 0:
        notes.append(
            f"LoRA: {p.policy.lora_params:,} adapter parameters trained; the reference is the "
            "adapters-off policy (no copy)"
        )
    if p.fsdp and p.stage == "ppo":
        notes.append("the policy is gathered whole for each rollout (counted under generation)")
    if p.device != "cpu":
        notes.append(f"host memory per process at load: {f.host_load / GiB:.3f} GiB")
    return notes


def plan_memory(p: PlanInput) -> Plan:
    """Predict the bytes per device of ``p`` (see the module docstring for what each term is)."""
    # 1. the batch each process holds: a rollout's share and one training micro-batch
    local, micro = _micro_batch(p)
    b = DTYPE_BYTES[p.dtype]
    n = p.processes if p.fsdp else 1  # each process's share of a sharded tensor: 1/n

    def share(count: int) -> int:
        return math.ceil(count / n) * b

    # 2. the models' weights, what is trained, the rollout and loading
    if p.stage == "train-rm":
        f = _reward_model_footprint(p, share)
    else:
        f = _ppo_footprint(p, share, local)
    # 3. what training adds: gradients and AdamW's two moments of what is trained, activations,
    # and FSDP's or DDP's buffers
    grads = share(f.trained)
    optimizer = 2 * share(f.trained)
    activations = _activations(p, f, micro)
    working = _working_set(p, f, n)

    # 4. the components and the three moments, the peak being the largest
    components = {
        **f.weights,
        "gradients": grads,
        "optimizer": optimizer,
        "activations": activations,
        "generation": f.generation,
        "fsdp_or_ddp_buffers": working,
        "runtime": p.runtime_bytes,
    }
    stored = sum(f.weights.values()) + p.runtime_bytes
    moments = {
        "load": f.load + p.runtime_bytes,
        "rollout": stored + f.generation,
        "train": stored + grads + optimizer + activations + working,
    }
    if p.stage == "train-rm":
        del moments["rollout"]
    return Plan(components, moments, _notes(p, f))


def format_plan(plan: Plan, p: PlanInput) -> str:
    """The table ``rlhfkit plan`` prints."""
    mode = f"FSDP over {p.processes}" if p.fsdp else f"replicated on {p.processes}"
    lines = [
        f"{p.stage} memory per device ({mode} process(es), {p.dtype}; a prediction)",
    ]
    if p.stage == "ppo":
        lines.append(f"  policy: {p.policy.name} ({p.policy.params / 1e6:,.1f} M parameters)")
    if p.reward_model is not None:
        rm = p.reward_model
        lines.append(f"  reward model: {rm.name} ({rm.params / 1e6:,.1f} M parameters)")
    lines.append("")
    width = max(len(k) for k in plan.components)
    for name, value in plan.components.items():
        lines.append(f"  {name.ljust(width)}  {value / GiB:10.3f} GiB")
    lines.append("")
    for name, value in plan.moments.items():
        lines.append(f"  at {name.ljust(width - 3)}  {value / GiB:10.3f} GiB")
    lines.append(f"  {'peak'.ljust(width)}  {plan.peak / GiB:10.3f} GiB ({plan.peak_moment})")
    lines += [f"  note: {note}" for note in plan.notes]
    return "\n".join(lines)
