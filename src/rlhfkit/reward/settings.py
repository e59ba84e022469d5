"""How a reward model reads a (prompt, response) pair and scales its score: :class:`RewardSettings`,
stored in the saved ``config.json`` under ``"rlhfkit"``; chosen for a new backbone (the input
format, the template, the length its positions allow) or read back from a saved reward model."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from rlhfkit.errors import ConfigError
from rlhfkit.reward.backbone import is_causal_lm

RLHFKIT_CONFIG_KEY = "rlhfkit"
FORMAT_VERSION = 1
DEFAULT_CAUSAL_TEMPLATE = "{prompt}\n{response}"
DEFAULT_MAX_LENGTH = 512

PLACEHOLDER = re.compile(r"\{(prompt|response)\}")


@dataclass
class RewardSettings:
    """Everything beyond the HF model that scoring needs; stored as ``config.rlhfkit``."""

    input_format: str  # "template" or "chat" (causal LMs), "text_pair" (encoders)
    template: str | None = None  # for "template": placeholders {prompt} and {response}
    # ("chat": prompt + [assistant: response] rendered with the tokenizer's chat template)
    append_eos: bool = True  # "template" only: add the EOS token after the text
    max_length: int = DEFAULT_MAX_LENGTH  # tokens; longer inputs lose tokens from the left
    gain: float = 1.0  # score = gain * raw + bias
    bias: float = 0.0
    normalized_on: int | None = None  # how many reference responses set gain/bias (None: not set)
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RewardSettings:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def reward_settings(
    hf_config: Any, tokenizer: Any, who: str, chat_template: str, conversational: bool
) -> RewardSettings:
    """The settings a saved reward model stored (it keeps the format it was trained on), else
    those of a new one on this backbone: a causal LM reads conversations through its chat
    template when ``chat_template`` and ``conversational`` say so (:mod:`rlhfkit.chat`), else
    the default template then EOS; an encoder reads a text pair. ``who`` names the model in errors."""
    from rlhfkit.chat import use_chat_template

    saved = getattr(hf_config, RLHFKIT_CONFIG_KEY, None)
    if isinstance(saved, dict):
        return RewardSettings.from_dict(saved)
    causal = is_causal_lm(hf_config)
    chat = causal and use_chat_template(chat_template, tokenizer, conversational, who)
    if chat_template == "always" and not causal:
        raise ConfigError(f"{who}: an encoder reads (prompt, response) as a text pair; --chat-template always is for causal LMs")  # fmt: skip
    limit = position_limit(hf_config, tokenizer)
    return RewardSettings(
        input_format="chat" if chat else ("template" if causal else "text_pair"),
        template=DEFAULT_CAUSAL_TEMPLATE if causal and not chat else None,
        append_eos=causal and not chat and tokenizer.eos_token_id is not None,
        max_length=min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH,
    )


def with_overrides(
    settings: RewardSettings, hf_config: Any, tokenizer: Any, name: str,
    template: str | None, max_length: int | None,
) -> RewardSettings:  # fmt: skip
    """``settings`` with the ``--template`` and ``--max-length`` given (None: as they are); the
    template only for a model reading plain text, the length never beyond the model's positions."""
    if template is not None:
        if settings.input_format != "template":
            causal = settings.input_format != "text_pair"
            raise ConfigError(
                f"{name}: --template is for causal LMs reading plain text; this reward model "
                f"reads {'text pairs' if not causal else 'conversations (chat template)'}"
            )
        check_template(template)
        settings = dataclasses.replace(settings, template=template)
    if max_length is not None:
        limit = position_limit(hf_config, tokenizer)
        # Never more than the model has positions for (a 512 default on a 128-position model).
        settings = dataclasses.replace(
            settings, max_length=min(max_length, limit) if limit else max_length
        )
    return settings


def check_template(template: str) -> None:
    found = set(PLACEHOLDER.findall(template))
    if "response" not in found:
        raise ConfigError(
            f"template {template!r} must contain {{response}} (and usually {{prompt}})"
        )


def position_limit(hf_config: Any, tokenizer: Any) -> int | None:
    limits = [
        getattr(hf_config, a, None) for a in ("max_position_embeddings", "n_positions", "n_ctx")
    ]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:
        limits.append(tok_max)
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else None
