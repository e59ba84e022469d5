"""What ``rlhfkit plan`` needs to know about a model, read from its config alone.

Parameters are counted exactly: the model is built on the ``meta`` device from its config (no
memory, no weights read) and its tensors' sizes are summed; LoRA adapters are added to it with
PEFT the way ``rlhfkit ppo --lora-r`` adds them (:func:`read_shape`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlhfkit.errors import ConfigError


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
        from peft import LoraConfig

        from rlhfkit.loading import with_lora_adapters

        lora_config = LoraConfig(
            r=lora_r, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
            target_modules=default_targets(lora_targets, config.model_type),
        )  # fmt: skip
        with torch.device("meta"):
            peft_model = with_lora_adapters(model, lora_config)
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
