"""Reward model: a scalar head on any Hugging Face backbone.

The model *is* an ``AutoModelForSequenceClassification`` with ``num_labels = 1`` (never 2), saved with
its tokenizer, so ``AutoModelForSequenceClassification.from_pretrained(DIR)`` loads and scores it with
no rlhfkit code. What rlhfkit adds lives in the saved ``config.json`` under the key ``"rlhfkit"``:

- how a (prompt, response) pair becomes model input (``input_format`` + ``template``),
- ``max_length`` and the truncation side (left: the end of the response, where the score is read, is
  always kept),
- the normalization ``gain`` and ``bias`` (lm-human-preferences: scores on a reference set of
  responses have mean 0 and std 1), applied by :meth:`RewardModel.score`.

Backbones:

- **causal LMs** (GPT-2, Llama, Qwen, ...), two input formats:
  - ``"template"``: ``template`` with ``{prompt}`` and ``{response}`` filled in (default
    ``"{prompt}\n{response}"``), then the EOS token. The newline keeps the last prompt word and the
    first response word apart whatever the data's spacing convention (TRL pairs put the space in
    the response, ``rlhfkit generate`` and word-level tokenizers do not; plain concatenation would
    glue ``"terms."`` and ``"Think"`` into one unknown word).
  - ``"chat"``: the conversation (prompt messages, then the response as the assistant's turn)
    rendered with the tokenizer's chat template, chosen when the training data is conversational
    (:mod:`rlhfkit.chat`). The template ends the turn itself; no EOS is added.

  The score is read at the last token that is not pad (transformers' rule), the token every input
  ends with, which has attended to the whole text. So the pad id must differ from that token: the
  tokenizer's pad when it does, else an existing special token that does, else a new ``<|pad|>``
  (the embedding is resized first; docs/models.md).
- **encoders** (BERT, MiniLM, DeBERTa, ...): the tokenizer's text pair ``[CLS] prompt [SEP] response
  [SEP]``; the head reads the pooled ``[CLS]`` state.

A new head is initialised ``N(0, 1/√(d+1))`` as in lm-human-preferences (``d`` = hidden size).

The settings (how a pair is read, the normalization) are in :mod:`.settings`; the backbone's kind,
loading and head initialisation in :mod:`.backbone`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlhfkit.errors import ConfigError
from rlhfkit.loading import disable_dropout
from rlhfkit.reward.backbone import (
    check_trained,
    init_fresh_heads,
    init_reward_head,
    is_causal_lm,
    load_backbone,
    minilm_path,
    quiet_transformers,
)
from rlhfkit.reward.settings import (
    DEFAULT_CAUSAL_TEMPLATE,
    DEFAULT_MAX_LENGTH,
    FORMAT_VERSION,
    PLACEHOLDER,
    RLHFKIT_CONFIG_KEY,
    RewardSettings,
    reward_settings,
    with_overrides,
)

if TYPE_CHECKING:
    from rlhfkit.chat import Prompt
    from rlhfkit.data.messages import Message

# Also importable from here, where they were defined before reward/backbone.py and settings.py.
__all__ = [
    "DEFAULT_CAUSAL_TEMPLATE",
    "DEFAULT_MAX_LENGTH",
    "FORMAT_VERSION",
    "PAD_TOKEN",
    "RLHFKIT_CONFIG_KEY",
    "RewardModel",
    "RewardSettings",
    "init_reward_head",
    "is_causal_lm",
    "minilm_path",
    "quiet_transformers",
]

PAD_TOKEN = "<|pad|>"


class RewardModel:
    """A sequence-classification model with one output, its tokenizer and :class:`RewardSettings`.

    ``score(prompts, responses)`` returns normalized scores; training code uses :meth:`encode` /
    :meth:`collate` / :meth:`raw_rewards` so that training and scoring see identical inputs.
    """

    def __init__(self, model: Any, tokenizer: Any, settings: RewardSettings):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"

    # ---------------------------------------------------------------- loading / saving
    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | Path,
        *,
        template: str | None = None,
        max_length: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        dropout: bool = False,
        chat_template: str = "auto",
        conversational: bool = False,
        trained: bool = False,
        option: str = "--model",
    ) -> RewardModel:
        """Load a saved reward model, or start one from any backbone (a directory or a hub name).

        A backbone without a one-output head gets a fresh ``N(0, 1/√(d+1))`` head. ``template`` and
        ``max_length`` override what a saved reward model recorded (only sensible before training).
        ``chat_template`` (``auto``/``always``/``never``, see :mod:`rlhfkit.chat`) and
        ``conversational`` (the training data holds message lists) decide whether a new causal-LM
        reward model reads conversations through its tokenizer's chat template; a saved reward
        model keeps the format it was trained on. ``trained=True`` (scoring, PPO) refuses a model
        that is not a trained one-output reward model. ``option`` names the model in errors.
        The model is fp32, in eval mode, with dropout off unless ``dropout=True``.
        """
        from rlhfkit.loading import (
            check_model_source,
            check_vocabulary,
            load_config,
            load_tokenizer,
        )

        name = check_model_source(path_or_name, option)
        kw: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
        with quiet_transformers():
            hf_config = load_config(name, option, **kw)
            tokenizer = load_tokenizer(name, option, **kw)
        if trained:
            has_settings = isinstance(getattr(hf_config, RLHFKIT_CONFIG_KEY, None), dict)
            check_trained(hf_config, has_settings, option, name)
        # 1. How it reads a (prompt, response): as stored, or chosen for this backbone.
        settings = reward_settings(
            hf_config, tokenizer, f"{option} {name}", chat_template, conversational
        )
        settings = with_overrides(settings, hf_config, tokenizer, name, template, max_length)
        # 2. The backbone with a one-output head, its vocabulary checked against the tokenizer.
        model, fresh = load_backbone(name, option, **kw)
        rows = int(model.get_input_embeddings().weight.shape[0])
        check_vocabulary(tokenizer, rows, option, name)
        rm = cls(model, tokenizer, settings)
        # 3. The score is read at the last token that is not pad (transformers' rule), so the pad
        # id must differ from the token every input ends with; set after loading, so that no
        # embedding is built around a pad index (and none outside the matrix, see docs/models.md).
        model.config.pad_token_id = rm._choose_pad_id(rows)
        model.config.problem_type = "regression"
        # 4. A head that was not in the checkpoint: N(0, 1/√(d+1)).
        init_fresh_heads(model, fresh)
        if not dropout:
            disable_dropout(model)
        model.eval()
        return rm

    def _choose_pad_id(self, rows: int) -> int:
        """The pad id: the tokenizer's, if it lies inside the embedding and is not the token every
        input ends with; else an existing special token that is neither (BOS, UNK, ...); else a
        new ``<|pad|>`` token, added after resizing the embedding (saved with the tokenizer)."""
        tok = self.tokenizer
        last = self.final_token_id()
        ok = lambda i: i is not None and 0 <= i < rows and i not in (last, tok.eos_token_id)  # noqa: E731
        if ok(tok.pad_token_id):
            return int(tok.pad_token_id)
        special = sorted(set(tok.all_special_ids))
        for c in (tok.bos_token_id, tok.unk_token_id, *special):
            if ok(c):
                tok.pad_token = tok.convert_ids_to_tokens(c)
                return int(c)
        tok.add_special_tokens({"pad_token": PAD_TOKEN})
        self.model.resize_token_embeddings(len(tok), mean_resizing=False)
        return int(tok.pad_token_id)

    def final_token_id(self) -> int | None:
        """The token every input ends with (the appended EOS, the chat template's last token, an
        encoder's [SEP]): the position the score is read at."""
        if self.settings.input_format == "template" and self.settings.append_eos:
            return self.tokenizer.eos_token_id
        feats, _ = self.encode(["a"], ["b"])
        return feats[0]["input_ids"][-1]

    def score_layer(self) -> tuple[str, torch.nn.Linear]:
        """The output layer (``score`` of causal LMs, ``classifier`` of encoders): name, module."""
        for name in ("score", "classifier"):
            layer = getattr(self.model, name, None)
            if isinstance(layer, torch.nn.Linear):
                return name, layer
        raise ConfigError(f"{type(self.model).__name__}: no linear score or classifier layer")

    def with_heads(self, n: int) -> None:
        """Replace the one-output head by ``n`` fresh heads ``N(0, 1/√(d+1))`` on the same trunk
        (a multi-head ensemble: raw rewards become (N, n))."""
        name, layer = self.score_layer()
        heads = torch.nn.Linear(layer.in_features, n, bias=layer.bias is not None)
        init_reward_head(heads)
        setattr(self.model, name, heads.to(layer.weight.device, layer.weight.dtype))
        self.model.config.num_labels = n

    def single_head(self, i: int) -> RewardModel:
        """Head ``i`` of a multi-head model with a copy of the trunk: an ordinary reward model."""
        import copy

        name, layer = self.score_layer()
        model = copy.deepcopy(self.model)
        head = torch.nn.Linear(layer.in_features, 1, bias=layer.bias is not None)
        with torch.no_grad():
            head.weight.copy_(layer.weight[i : i + 1])
            if layer.bias is not None:
                head.bias.copy_(layer.bias[i : i + 1])
        setattr(model, name, head.to(layer.weight.device, layer.weight.dtype))
        model.config.num_labels = 1
        return RewardModel(model, self.tokenizer, copy.deepcopy(self.settings))

    def save_pretrained(self, out_dir: str | Path) -> None:
        """Write model, tokenizer and ``config.rlhfkit`` into ``out_dir`` (plain HF layout)."""
        out_dir = Path(out_dir)
        setattr(self.model.config, RLHFKIT_CONFIG_KEY, asdict(self.settings))
        with quiet_transformers():
            self.model.save_pretrained(out_dir)
            self.tokenizer.save_pretrained(out_dir)

    # ---------------------------------------------------------------- inputs
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> RewardModel:
        self.model.to(device)
        return self

    def format_text(self, prompt: Prompt, response: str | list[Message]) -> str:
        """The text a causal-LM reward model reads (before the EOS token of the plain format):
        the conversation rendered with the chat template, or ``template`` filled in."""
        from rlhfkit.chat import as_text, render_conversation

        if self.settings.input_format == "chat":
            return render_conversation(self.tokenizer, prompt, response)
        values = {"prompt": as_text(prompt), "response": _response_text(response)}
        assert self.settings.template is not None
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], self.settings.template)

    def encode(
        self, prompts: Sequence[Prompt], responses: Sequence[str | list[Message]]
    ) -> tuple[list[dict[str, list[int]]], list[int]]:
        """Tokenize pairs as training and scoring see them.

        A prompt is text or a conversation (a list of messages), a response text or the
        assistant's messages; how they become text is the model's ``input_format``.
        Returns ``(features, full_lengths)``: one dict per pair (``input_ids`` and, for encoders,
        ``token_type_ids``), at most ``max_length`` tokens, and each pair's length before truncation
        (so callers can count or drop over-long items). Truncation removes tokens from the left.
        """
        from rlhfkit.chat import as_text

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return [], []
        max_len = self.settings.max_length
        tok = self.tokenizer
        if self.settings.input_format in ("template", "chat"):
            chat = self.settings.input_format == "chat"
            texts = [self.format_text(p, r) for p, r in zip(prompts, responses, strict=True)]
            # A chat template writes BOS and its markers itself.
            ids = tok(texts, add_special_tokens=not chat, truncation=False)["input_ids"]
            eos = [tok.eos_token_id] if self.settings.append_eos and not chat else []
            full = [x + eos for x in ids]
            lengths = [len(x) for x in full]
            feats = [{"input_ids": x[-max_len:]} for x in full]
            return feats, lengths
        prompts = [as_text(p) for p in prompts]
        responses = [_response_text(r) for r in responses]
        enc = tok(list(prompts), list(responses), truncation=False)
        lengths = [len(x) for x in enc["input_ids"]]
        feats = [{k: enc[k][i] for k in enc if k != "attention_mask"} for i in range(len(lengths))]
        long_idx = [i for i, n in enumerate(lengths) if n > max_len]
        if long_idx:
            cut = tok(
                [prompts[i] for i in long_idx],
                [responses[i] for i in long_idx],
                truncation="longest_first",
                max_length=max_len,
            )
            for j, i in enumerate(long_idx):
                feats[i] = {k: cut[k][j] for k in cut if k != "attention_mask"}
        return feats, lengths

    def collate(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Right-pad a list of encoded pairs into tensors ``(N, T)`` on the model's device."""
        batch = self.tokenizer.pad(list(features), padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    # ---------------------------------------------------------------- scoring
    @staticmethod
    def rewards_from_output(output: Any) -> torch.Tensor:
        """``(N, 1)`` logits of a sequence-classification output → raw rewards ``(N,)``."""
        return output.logits.squeeze(-1).float()

    def raw_rewards(self, batch: dict[str, torch.Tensor], model: Any | None = None) -> torch.Tensor:
        """Unnormalized scores ``(N,)`` with gradients; ``model`` overrides (e.g. a DDP wrapper)."""
        return self.rewards_from_output((model or self.model)(**batch))

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str | list[Message]],
        batch_size: int = 32,
        normalized: bool = True,
    ) -> torch.Tensor:
        """Scores ``(N,)`` on CPU, ``gain * raw + bias`` unless ``normalized=False``; no grad.

        Pairs are batched by length (less padding) and returned in input order.
        """
        n = len(prompts)
        if n == 0:
            return torch.zeros(0)
        feats, _ = self.encode(prompts, responses)
        order = sorted(range(n), key=lambda i: len(feats[i]["input_ids"]))
        out = torch.empty(n)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                batch = self.collate([feats[i] for i in idx])
                out[idx] = self.raw_rewards(batch).cpu()
        finally:
            self.model.train(was_training)
        if normalized:
            out = out * self.settings.gain + self.settings.bias
        return out

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        """A reward function: ``fn(prompts, responses) -> list[float]`` (normalized scores)."""
        return self.score(prompts, responses).tolist()

    def set_normalization(self, raw_scores: torch.Tensor) -> tuple[float, float]:
        """Set gain/bias so ``raw_scores`` map to mean 0, std 1 (lm-human-preferences)."""
        raw = raw_scores.double()
        if raw.numel() < 2:
            raise ValueError("normalization needs at least 2 reference scores")
        mean, std = raw.mean().item(), raw.std().item()
        if not math.isfinite(std) or std < 1e-8:
            raise ValueError(f"reference scores have std {std:.3g}: cannot normalize")
        self.settings.gain = 1.0 / std
        self.settings.bias = -mean / std
        self.settings.normalized_on = int(raw.numel())
        return self.settings.gain, self.settings.bias


def _response_text(response: str | list[Message]) -> str:
    from rlhfkit.data.messages import messages_to_text

    return messages_to_text(response, as_prompt=False) if isinstance(response, list) else response


def _response_text(response: str | list[Message]) -> str:
    from rlhfkit.data.messages import messages_to_text

    return messages_to_text(response, as_prompt=False) if isinstance(response, list) else response
