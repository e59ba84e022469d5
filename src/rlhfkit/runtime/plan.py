"""Memory per device of a PPO or reward-model run, predicted from the models' configs before any
weight is loaded (``rlhfkit plan``).

Parameters are counted exactly: each model is built on the ``meta`` device from its config (no
memory, no weights read) and its tensors' sizes are summed; LoRA adapters are added to it with
PEFT the way ``rlhfkit ppo --lora-r`` adds them. The rest is arithmetic over what rlhfkit keeps
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
import warnings
from dataclasses import dataclass, field
from typing import Any

from rlhfkit.errors import ConfigError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GiB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about one model, read from its config."""

    name: str
    params: int
    """Every parameter (a tied embedding once)."""
    embedding_params: int
    """Input embedding + untied output head + final norms: the part outside the blocks."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    vocab: int
    lora_params: int = 0
    """Adapter parameters for the requested LoRA rank (0 without LoRA)."""
    eager_attention: bool = False
    """Attention that keeps its (heads × tokens × tokens) scores for the backward pass; SDPA, the
    default, keeps only its output and log-sum-exp."""

    @property
    def block_params(self) -> int:
        return (self.params - self.embedding_params) // max(self.layers, 1)


def _config_value(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError(
        f"the model config has none of {', '.join(names)}: cannot plan for a {config.model_type!r}"
    )


def read_shape(
    name: str, option: str, lora_r: int = 0, lora_targets: str | None = None, head: str = "lm"
) -> ModelShape:
    """Count a model's parameters from its config (a directory, a ``config.json`` file or a hub
    name) on the meta device. ``head``: ``lm`` (a causal LM: the policy) or ``score`` (one output:
    a reward model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhfkit.loading import is_causal_lm_config, load_config
    from rlhfkit.ppo.config import lora_targets as default_targets

    config = load_config(name, option)
    if head == "lm" and not is_causal_lm_config(config):
        raise ConfigError(
            f"{option} {name}: a {config.model_type!r} model is not a causal LM; give a decoder-only "
            "language model such as GPT-2, Llama, Qwen or Mistral"
        )
    if head == "score":
        config.num_labels = 1
    auto = AutoModelForCausalLM if head == "lm" else AutoModelForSequenceClassification
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialization
            model = auto.from_config(config)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{option} {name}: cannot build the model from its config ({e})") from e
    params = sum(p.numel() for p in model.parameters())  # a tied tensor is listed once
    blocks = _block_params(model)
    lora = 0
    if lora_r > 0:
        from peft import LoraConfig, get_peft_model

        lora_config = LoraConfig(
            r=lora_r, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
            target_modules=default_targets(lora_targets, config.model_type),
        )  # fmt: skip
        # (PEFT warns that GPT-2's Conv1D layers are transposed, which it handles, and transformers
        # about a deprecated name PEFT calls: nothing for the user)
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft_model = get_peft_model(model, lora_config)
        lora = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = _config_value(text, "num_attention_heads", "n_head")
    return ModelShape(
        name=str(name),
        params=params,
        embedding_params=params - blocks,
        layers=_config_value(text, "num_hidden_layers", "n_layer"),
        hidden=_config_value(text, "hidden_size", "n_embd", "d_model"),
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        vocab=_config_value(text, "vocab_size"),
        lora_params=lora,
        eager_attention=getattr(model.config, "_attn_implementation", "eager") == "eager",
    )


def _block_params(model: Any) -> int:
    from rlhfkit.runtime.fsdp import transformer_blocks

    return sum(p.numel() for b in transformer_blocks(model) for p in b.parameters())


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


def plan_memory(p: PlanInput) -> Plan:
    """Predict the bytes per device of ``p`` (see the module docstring for what each term is)."""
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
    b = DTYPE_BYTES[p.dtype]
    n = p.processes if p.fsdp else 1  # each process's share of a sharded tensor: 1/n
    pol, rm = p.policy, p.reward_model

    def share(count: int) -> int:
        return math.ceil(count / n) * b

    lora = pol.lora_params > 0
    if p.stage == "train-rm":
        if rm is None:
            raise ConfigError("train-rm needs the reward model's config (--model)")
        trained = rm.params
        weights = {"reward_model": share(rm.params)}
        seq, act_model, logit_tokens, logit_width = p.prompt_length + p.response_length, rm, 0, 0
        generation = 0
        load = host_load = rm.params * b
    else:
        critic = p.critic
        if critic == "auto":
            critic = "frozen-reward-model+head" if rm is not None else "head"
        if critic in ("frozen-reward-model", "frozen-reward-model+head", "reward-model") and (
            rm is None
        ):
            raise ConfigError(f"--critic {critic} needs a reward model")
        head = pol.hidden + 1
        critic_params = {
            "head": head,
            "frozen-reward-model": rm.hidden + 1 if rm else 0,
            "frozen-reward-model+head": (rm.hidden + 1 if rm else 0) + head,
            "policy": pol.params - pol.vocab * pol.hidden + head,  # a trunk of its own
            "reward-model": rm.params if rm else 0,
        }[critic]
        trained = (pol.lora_params if lora else pol.params) + critic_params
        weights = {
            "policy": share(pol.params + pol.lora_params),
            "reference": 0 if lora else share(pol.params),
            "critic": share(critic_params),
            "reward_model": share(rm.params) if rm is not None else 0,
        }
        seq = p.prompt_length + p.response_length
        act_model, logit_tokens, logit_width = pol, p.response_length, pol.vocab
        # A rollout: every process's share of the batch with its KV cache (keys and values per
        # layer and token), and a sharded policy gathered whole for the rollout.
        kv = 2 * pol.layers * local * seq * pol.kv_heads * (pol.hidden // pol.heads) * b
        gathered = (pol.params + pol.lora_params) * b - weights["policy"] if p.fsdp else 0
        generation = kv + gathered + local * pol.vocab * b
        # Loading (ppo/setup.py: build_policy): the whole policy is read into host memory and,
        # without LoRA, copied for the reference; each goes to the device whole and is sharded
        # there. On a CPU host and device are one memory and both copies count; on a GPU the
        # device holds one whole model at a time (and the host both).
        host_load = pol.params * b * (1 if lora else 2)
        on_device = host_load if p.device == "cpu" else pol.params * b + weights["reference"]
        load = on_device + weights["reward_model"]

    grads = share(trained)
    optimizer = 2 * share(trained)
    # Activations of one micro-batch: 17·h values per token and layer (inputs of the norms,
    # projections, MLP and its activation) + 2·a·s attention scores and probabilities (eager
    # attention only); with
    # gradient checkpointing only each block's input is kept (plus one block recomputed).
    scores = 2 * act_model.heads * seq if act_model.eager_attention else 0
    per_token_layer = 17 * act_model.hidden + scores
    layers_kept = (
        act_model.layers * act_model.hidden + per_token_layer
        if p.gradient_checkpointing
        else act_model.layers * per_token_layer
    )
    activations = micro * seq * layers_kept * b
    # Response logits, their log-softmax and their gradient (3 × B × R × V).
    activations += 3 * micro * logit_tokens * logit_width * b
    if p.stage == "ppo" and p.critic in ("policy", "reward-model"):
        activations *= 2  # a second trunk runs forward and backward
    # FSDP's working set in training: a unit gathered, the next prefetched, and one unit's
    # unsharded gradients with their reduce-scatter buffer; the largest unit is a block or the root
    # (embedding, final norm, untied head). DDP instead keeps a second copy of every gradient in
    # its all-reduce buckets.
    largest_unit = max(act_model.block_params, act_model.embedding_params)
    if p.fsdp and n > 1:
        working = (3 * largest_unit + act_model.block_params) * b
    elif p.processes > 1:
        working = trained * b
    else:
        working = 0

    components = {
        **weights,
        "gradients": grads,
        "optimizer": optimizer,
        "activations": activations,
        "generation": generation,
        "fsdp_or_ddp_buffers": working,
        "runtime": p.runtime_bytes,
    }
    stored = sum(weights.values()) + p.runtime_bytes
    moments = {
        "load": load + p.runtime_bytes,
        "rollout": stored + generation,
        "train": stored + grads + optimizer + activations + working,
    }
    if p.stage == "train-rm":
        del moments["rollout"]
    notes = []
    if lora:
        notes.append(
            f"LoRA: {pol.lora_params:,} adapter parameters trained; the reference is the "
            "adapters-off policy (no copy)"
        )
    if p.fsdp and p.stage == "ppo":
        notes.append("the policy is gathered whole for each rollout (counted under generation)")
    if p.device != "cpu":
        notes.append(f"host memory per process at load: {host_load / GiB:.3f} GiB")
    return Plan(components, moments, notes)


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
