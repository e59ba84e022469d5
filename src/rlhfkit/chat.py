"""Chat templates: how a conversation becomes the text a model reads.

One rule for every command (``generate``, ``train-rm``, ``score``, ``ppo`` and the reward-model call
inside PPO), chosen with ``--chat-template``:

- ``auto`` (default): a *conversational* record (its prompt is a list of ``{"role", "content"}``
  messages) is rendered with the tokenizer's own template (``apply_chat_template``) when the
  tokenizer has one; plain-text prompts stay plain text, as TRL treats its "standard" datasets.
- ``always``: plain-text prompts are read as one user message each and rendered with the template
  too (an instruct model given a ``.txt`` file of questions). Needs a template.
- ``never`` (``--no-chat-template``): conversations become plain ``"Role: content"`` text
  (:func:`rlhfkit.data.messages.messages_to_text`).

A prompt rendered for generation ends with the template's generation prompt
(``add_generation_prompt=True``: "<|im_start|>assistant\\n" and the like), so the model writes the
assistant's turn. A reward model trained on rendered conversations stores that choice
(``RewardSettings.input_format == "chat"``) and renders ``prompt + [assistant: response]`` with its
own tokenizer's template whenever it scores, so it always reads the format it was trained on,
whatever tokenizer the policy has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from rlhfkit.data.messages import Message, messages_to_text
from rlhfkit.errors import ConfigError

Prompt = str | list[Message]
"""A prompt as read from data: plain text, or a conversation (a list of messages)."""

ChatTemplateMode = Literal["auto", "always", "never"]
CHAT_TEMPLATE_MODES: tuple[str, ...] = ("auto", "always", "never")


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer ships a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def is_conversational(prompts: Sequence[Any]) -> bool:
    """Whether any prompt is a message list."""
    return any(isinstance(p, list) for p in prompts)


def use_chat_template(mode: str, tokenizer: Any, conversational: bool, who: str) -> bool:
    """Resolve ``--chat-template`` for one tokenizer: True when inputs are rendered with it.

    ``who`` names the model in the error (``--policy ./base``)."""
    if mode not in CHAT_TEMPLATE_MODES:
        raise ConfigError(f"--chat-template must be one of {', '.join(CHAT_TEMPLATE_MODES)}")
    if mode == "never":
        return False
    if mode == "always":
        if not has_chat_template(tokenizer):
            raise ConfigError(
                f"--chat-template always: {who} has no chat template "
                "(use --chat-template auto or never)"
            )
        return True
    return conversational and has_chat_template(tokenizer)


def as_messages(prompt: Prompt) -> list[Message]:
    """A prompt as a conversation: plain text is one user message."""
    return list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def as_text(prompt: Prompt) -> str:
    """A prompt as plain text (a conversation rendered as ``"Role: content"`` lines)."""
    return messages_to_text(prompt) if isinstance(prompt, list) else prompt


def response_messages(response: str | list[Message]) -> list[Message]:
    """A response as the assistant's message(s)."""
    if isinstance(response, list):
        return list(response)
    return [{"role": "assistant", "content": response}]


def render_prompt(tokenizer: Any, prompt: Prompt, chat: bool) -> str:
    """The text a causal LM continues: the rendered conversation plus the template's generation
    prompt when ``chat``, else the plain text. Tokenize the result with
    :func:`encode_rendered` (the template already holds BOS and other special tokens)."""
    if not chat:
        return as_text(prompt)
    return tokenizer.apply_chat_template(
        as_messages(prompt), tokenize=False, add_generation_prompt=True
    )


def render_conversation(tokenizer: Any, prompt: Prompt, response: str | list[Message]) -> str:
    """``prompt`` followed by the assistant's ``response``, rendered with the template (what a
    reward model trained on conversations reads)."""
    return tokenizer.apply_chat_template(
        as_messages(prompt) + response_messages(response), tokenize=False
    )


def encode_rendered(tokenizer: Any, texts: Sequence[str], chat: bool) -> list[list[int]]:
    """Token ids of rendered texts: a chat template writes its own BOS and markers, so the
    tokenizer adds no special tokens to it (TRL does the same); plain text gets them as usual."""
    return tokenizer(list(texts), add_special_tokens=not chat)["input_ids"]
