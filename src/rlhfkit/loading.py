"""Loading the models people bring, with one set of rules for every command.

- **Where a model comes from.** A ``save_pretrained`` directory, or a Hugging Face Hub name. What
  cannot load gets one line that names the option and says what to do (the CLI prints it and exits
  with status 2): a path that does not exist, a directory without ``config.json``, a model that is
  not a causal LM where one is needed, a tokenizer with more tokens than the model's embedding.
- **Pad tokens** (docs/models.md): no id outside the embedding matrix is ever used. Generation
  and PPO pad with the tokenizer's pad token when it differs from every stop token, else with an
  existing special token that is not a stop token (BOS, UNK, ...); every mask is explicit, so
  nothing is added and nothing is resized. A reward model needs a pad id its score position can
  never hold (see :func:`rlhfkit.reward.model.RewardModel.from_pretrained`).
- **Stop tokens.** EOS, plus the ids the model's ``generation_config`` stops at (an instruct
  model's end of turn, such as ``<|eot_id|>`` or ``<end_of_turn>``), plus ``--stop-token``.
- **After loading**, for training: dropout off (:func:`disable_dropout`), and GPT-2's Python GELU
  replaced by PyTorch's kernel for the same function (:func:`fuse_activations`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlhfkit.errors import ConfigError

# A Hub repository id: "name" or "namespace/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


def check_model_source(name: str | Path, option: str, allow_ensemble: bool = False) -> str:
    """Check a model option's value before anything loads; returns it as a string.

    A local directory must hold ``config.json`` (or, with ``allow_ensemble``, ``ensemble.json``: a
    reward-model ensemble); a value that names no directory must look like a Hub id (``name`` or
    ``namespace/name``), else it is a path that does not exist."""
    name = str(name)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{option} {name}: not a directory (give a save_pretrained directory or a Hub name)")  # fmt: skip
        if allow_ensemble and (path / "ensemble.json").is_file():
            return str(path)
        if not (path / "config.json").is_file():
            hint = ""
            for sub in ("policy", "model"):
                if (path / sub / "config.json").is_file():
                    hint = f"; the model is in {path / sub}"
                    break
            raise ConfigError(f"{option} {name}: no config.json in this directory, so it is not a saved model{hint}")  # fmt: skip
        return str(path)
    if name.startswith(("/", "./", "../", "~")) or not _HUB_ID.match(name):
        raise ConfigError(f"{option} {name}: no such directory")
    return name


def _load_error(option: str, name: str, what: str, e: Exception) -> ConfigError:
    """One line for a failed load: a missing local directory reads as such, not as a Hub error."""
    if not Path(name).expanduser().exists():
        return ConfigError(
            f"{option} {name}: no such directory, and no {what} of that name could be loaded "
            f"from the Hugging Face Hub ({_first_line(e)})"
        )
    return ConfigError(f"{option} {name}: cannot load the {what} ({_first_line(e)})")


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def load_config(name: str, option: str, **kwargs: Any) -> Any:
    """``AutoConfig.from_pretrained`` with a one-line error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(option, name, "model", e) from None


def load_tokenizer(name: str, option: str, **kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` with a one-line error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _load_error(option, name, "tokenizer", e) from None


def is_causal_lm_config(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(
        config, "is_encoder_decoder", False
    )


def load_causal_lm(name: str, option: str, **kwargs: Any) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` of a decoder-only causal LM, checked: the model type has a
    causal-LM head and the tokenizer's ids fit the model's embedding."""
    from transformers import AutoModelForCausalLM

    name = check_model_source(name, option)
    trust = {k: v for k, v in kwargs.items() if k in ("revision", "trust_remote_code")}
    config = load_config(name, option, **trust)
    if not is_causal_lm_config(config):
        raise ConfigError(
            f"{option} {name}: a {config.model_type!r} model cannot load as a causal LM "
            "(AutoModelForCausalLM); give a decoder-only language model such as GPT-2, Llama, "
            "Qwen or Mistral"
        )
    tokenizer = load_tokenizer(name, option, **trust)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error(option, name, "causal LM", e) from None
    check_vocabulary(tokenizer, embedding_rows(model), option, name)
    return model, tokenizer


def embedding_rows(model: Any) -> int:
    """Rows of the model's input embedding matrix (the ids it can read)."""
    return int(model.get_input_embeddings().weight.shape[0])


def check_vocabulary(tokenizer: Any, rows: int, option: str, name: str) -> None:
    """Refuse a tokenizer that produces ids the embedding does not have.

    An embedding larger than the tokenizer is normal (checkpoints pad it to a multiple of 64). A
    pad token outside the embedding is tolerated: some tokenizer classes add a default one the
    checkpoint never had, and rlhfkit pads with an id inside the embedding instead
    (:func:`choose_pad_id`)."""
    too_big = [
        (tok, i)
        for tok, i in tokenizer.get_vocab().items()
        if i >= rows and tok != tokenizer.pad_token
    ]
    if too_big:
        tok, i = max(too_big, key=lambda x: x[1])
        raise ConfigError(
            f"{option} {name}: the tokenizer has ids up to {i} ({tok!r}) but the model's "
            f"embedding has only {rows} rows; resize the model to the tokenizer "
            "(model.resize_token_embeddings(len(tokenizer))) and save both"
        )


def stop_token_ids(
    tokenizer: Any, model: Any | None = None, extra: Iterable[int] = ()
) -> list[int]:
    """EOS, the ids ``model.generation_config`` stops at, and ``extra``: no duplicates, EOS first."""
    ids: list[int] = []
    candidates: list[Any] = [tokenizer.eos_token_id]
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        eos = gen.eos_token_id
        candidates += eos if isinstance(eos, list) else [eos]
    candidates += list(extra)
    for c in candidates:
        if c is not None and int(c) not in ids:
            ids.append(int(c))
    if not ids:
        raise ConfigError("the tokenizer has no EOS token: give --stop-token")
    return ids


def choose_pad_id(
    tokenizer: Any, avoid: Iterable[int] | None = None, rows: int | None = None
) -> int:
    """A pad id inside the embedding (``< rows``, default: the tokenizer's size) and not in
    ``avoid`` (the stop tokens, default: EOS): the tokenizer's pad token, else BOS, UNK or another
    special token, else the lowest ordinary id. Padding is always masked, so which token it is does
    not change any result; it only must not be read as a stop token, nor index past the
    embedding."""
    avoid = set([tokenizer.eos_token_id] if avoid is None else avoid)
    rows = len(tokenizer) if rows is None else rows
    special = sorted(set(getattr(tokenizer, "all_special_ids", []) or []))
    for c in (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id, *special):
        if c is not None and 0 <= c < rows and c not in avoid:
            return int(c)
    for c in range(rows):
        if c not in avoid:
            return c
    raise ConfigError("cannot choose a pad id distinct from the stop tokens")


def disable_dropout(model: Any) -> int:
    """Set every dropout probability to 0; returns how many were set. Covers dropout modules and
    the float ``*dropout`` attributes that attention implementations read at call time
    (Llama's ``attention_dropout``, ...). PPO trains with dropout off (lm-human-preferences: with
    it, the logprobs recomputed during the update would not match those of the rollout, and the
    ratio would not start at 1); reward models train and score with it off (TRL)."""
    from torch import nn

    n = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
            n += 1
        for name in ("attention_dropout", "dropout", "attn_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
                n += 1
    return n


def fuse_activations(model: Any) -> int:
    """Replace GPT-2's tanh-approximated GELU written in Python (``gelu_new``:
    ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``, about eight elementwise operators, each saving
    a (B, T, 4H) tensor for backward) with PyTorch's kernel for the same function
    (``F.gelu(x, approximate="tanh")``, one operator, one saved tensor). Same function up to float
    rounding (max difference 2.4e-7 on unit-normal inputs); no parameters change, so checkpoints and
    ``config.json`` stay as they were. Measured on a 2-core CPU (docs/benchmarks.md): a training
    forward + backward of the tiny benchmark policy 20% faster, of the ~20M one 4% faster, and
    less activation memory. Returns the number of modules replaced."""
    try:
        from transformers.activations import GELUTanh, NewGELUActivation
    except ImportError:  # an older transformers: leave the model as it is
        return 0
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                replaced += 1
    return replaced


def with_lora_adapters(model: Any, lora_config: Any) -> Any:
    """``peft.get_peft_model(model, lora_config)`` without two warnings the user cannot act on:
    PEFT's note that GPT-2's ``Conv1D`` layers store their weights transposed (it sets
    ``fan_in_fan_out`` itself, as it should), and transformers' deprecation of the
    ``is_gradient_checkpointing`` name that PEFT reads. Every other warning passes."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"fan_in_fan_out is set to False but the target module is `Conv1D`"
        )
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        return get_peft_model(model, lora_config)
