"""The world's base policy: a word-level tokenizer and a small GPT-2 pretrained from scratch.

This module holds the build (settings, cache, the shipped policy, :func:`build_base_policy`); the
tokenizer is in :mod:`rlhfkit.world.tokenizer`, the pretraining steps in
:mod:`rlhfkit.world.pretrain`, sampling and evaluation in :mod:`rlhfkit.world.evaluation`.

The policy is trained on ``prompt + " " + response + <eos>`` with responses from
``rlhfkit.world.sampling`` (every topic, held-out ones included: the base model plays a model that
already "knows" the world). It is saved with ``save_pretrained`` as an ordinary model directory —
model, tokenizer and a generation config with pad/EOS — so PPO and every other stage load it by path
with ``AutoModelForCausalLM`` / ``AutoTokenizer`` exactly as they would load a real model.

How PPO must feed it: tokenize the prompt string alone (no special tokens are added; the tokenizer
has no BOS post-processor), left-pad with ``<pad>``, generate; the response is the generated tokens,
decoded with ``skip_special_tokens=True``, and ends at ``<eos>``.

Settings that work on a 2-core CPU in about a minute (measured by a prototype, confirmed here):
3 layers, 96 dimensions, batch 32, learning rate 3e-3, 900 steps. Bigger models train fewer steps in
the same time and produce noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit import __version__
from rlhfkit.runtime.io import atomic_dir, write_json

# Re-exported: the tokenizer, the pretraining steps and the evaluation were defined here before
# they had modules of their own (rlhfkit.world.policy.X keeps working).
from rlhfkit.world.evaluation import (
    SAMPLING_TEMPERATURE,
    PolicyEvaluation,
    evaluate_policy,
    evaluate_texts,
    generate_responses,
    response_logprobs,
)
from rlhfkit.world.pretrain import (
    ProgressFn,
    loss_curve,
    new_gpt2,
    pretrain,
    save_policy,
    training_batches,
)
from rlhfkit.world.sampling import (
    DEFAULT_DISTRIBUTION,
    PROMPT_RESPONSE_SEPARATOR,
    ResponseDistribution,
)
from rlhfkit.world.tokenizer import SPECIAL_TOKENS, build_world_tokenizer, world_texts

__all__ = [
    "BUILD_INFO_FILE",
    "SAMPLING_TEMPERATURE",
    "SHIPPED_DIR",
    "SHIPPED_ROOT",
    "SHIPPED_SEEDS",
    "SPECIAL_TOKENS",
    "WORLD_VERSION",
    "BaseBuildSettings",
    "PolicyEvaluation",
    "ProgressFn",
    "build_base_policy",
    "build_world_tokenizer",
    "cache_root",
    "cached_policy_dir",
    "evaluate_policy",
    "evaluate_texts",
    "generate_responses",
    "is_built",
    "read_build_info",
    "response_logprobs",
    "shipped_policy_dir",
    "world_texts",
]

# Bump when the world's content, tokenizer or training procedure changes: it is part of the cache key.
WORLD_VERSION = 2

BUILD_INFO_FILE = "world_build.json"


# ---------------------------------------------------------------------------------------------
# Build settings and cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseBuildSettings:
    """Everything that determines the built base policy (and so its cache key)."""

    seed: int = 0
    steps: int = 900
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    n_layer: int = 3
    n_embd: int = 96
    n_head: int = 4
    n_positions: int = 256
    distribution: ResponseDistribution = field(default_factory=lambda: DEFAULT_DISTRIBUTION)

    @classmethod
    def quick(cls, seed: int = 0) -> BaseBuildSettings:
        """A small build in seconds for tests: it exercises the pipeline but is not fluent (about
        2% valid samples; fluency needs the full build's loss, see docs/world.md)."""
        return cls(seed=seed, steps=250, n_layer=2, n_embd=64, learning_rate=4e-3, warmup_steps=20)

    def key(self) -> str:
        """Hash of the settings, the world's content and the versions: the cache directory name."""
        payload = {
            "settings": asdict(self),
            "world_version": WORLD_VERSION,
            "rlhfkit": __version__,
            "content": hashlib.sha256("\n".join(world_texts()).encode()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """``$RLHFKIT_CACHE`` if set, else ``~/.cache/rlhfkit``."""
    env = os.environ.get("RLHFKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlhfkit"


def cached_policy_dir(settings: BaseBuildSettings) -> Path:
    return cache_root() / f"world-{settings.key()}"


SHIPPED_ROOT = Path(__file__).with_name("base_policies")
"""The base policies of ``BaseBuildSettings(seed=N)`` for N in :data:`SHIPPED_SEEDS` (the demo's
seeds), built by :func:`build_base_policy` and shipped inside the package in ``seed-N/``, so that a
first demo of any of these seeds needs no pretraining and ``--quick`` starts from a fluent policy.
``tests/test_world.py`` checks that each is the build of the current key, and rebuilds seed 0's to
check that a rebuild writes text of the same quality; after a change to the world or the build,
rebuild them with ``rlhfkit world build --no-cache --seed N --out
src/rlhfkit/world/base_policies/seed-N`` (docs/world.md)."""

SHIPPED_SEEDS = (0, 1, 2, 3, 4)
"""The seeds whose full base-policy build ships in the package."""

SHIPPED_DIR = SHIPPED_ROOT / "seed-0"
"""Seed 0's shipped base policy (the demo's default seed)."""


def shipped_policy_dir(settings: BaseBuildSettings) -> Path | None:
    """The shipped base policy when it is the one ``settings`` would build (same cache key), else
    ``None``."""
    path = SHIPPED_ROOT / f"seed-{settings.seed}"
    if is_built(path) and read_build_info(path).get("key") == settings.key():
        return path
    return None


def is_built(path: str | Path) -> bool:
    """Whether ``path`` holds a complete base-policy build (its record is written last)."""
    path = Path(path)
    return (path / BUILD_INFO_FILE).is_file() and (path / "config.json").is_file()


def build_base_policy(
    out_dir: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    quick: bool = False,
    settings: BaseBuildSettings | None = None,
    use_cache: bool = True,
    eval_samples: int = 200,
    progress: ProgressFn | None = None,
) -> Path:
    """Build (or take from the cache) the world's base policy; returns the model directory.

    ``settings`` overrides ``seed``/``steps``/``quick``. With ``use_cache`` the model is built once in
    ``cache_root()/world-<key>`` and reused (a second build is a copy, or nothing when ``out_dir`` is
    ``None``); ``out_dir`` receives a copy; the shipped policy of its seed (:data:`SHIPPED_ROOT`)
    fills the cache instead of a build when it has the same key. ``eval_samples`` samples are
    drawn after training to record the policy's quality in ``world_build.json`` (0 to skip).
    """
    if settings is None:
        settings = BaseBuildSettings.quick(seed) if quick else BaseBuildSettings(seed=seed)
        if steps is not None:
            settings = dataclasses.replace(settings, steps=steps)
    if use_cache:
        cached = cached_policy_dir(settings)
        if not is_built(cached):
            shipped = shipped_policy_dir(settings)
            with atomic_dir(cached) as tmp:
                if shipped is not None:
                    shutil.copytree(shipped, tmp, dirs_exist_ok=True)
                else:
                    _train_and_save(tmp, settings, eval_samples, progress)
        if out_dir is None:
            return cached
        out = Path(out_dir)
        with atomic_dir(out) as tmp:
            shutil.copytree(cached, tmp, dirs_exist_ok=True)
        return out
    if out_dir is None:
        raise ValueError("out_dir is required when use_cache is False")
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        _train_and_save(tmp, settings, eval_samples, progress)
    return out


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _train_and_save(
    out: Path, s: BaseBuildSettings, eval_samples: int, progress: ProgressFn | None
) -> None:
    """Pretrain the base policy of ``s`` into ``out`` and record how (``world_build.json``).

    The steps run in this order on purpose: the build is reproducible bit for bit on one machine
    only if torch's RNG draws the initial weights (1) and Python's the data (2) as before.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()

    # 1. the tokenizer and a randomly initialised GPT-2
    tokenizer = build_world_tokenizer()
    model = new_gpt2(tokenizer, s)
    # 2. the data: fresh samples from the world for every step, in length-bucketed batches
    batches = training_batches(tokenizer, s)
    # 3. AdamW with linear warm-up and cosine decay to 10%, next-token loss on every real token
    losses = pretrain(model, tokenizer, batches, s, progress)
    train_seconds = time.perf_counter() - t0
    # 4. save as an ordinary model directory, with generation defaults that give world text
    save_policy(model, tokenizer, out)
    # 5. measure what the policy produces, and record how it was built
    evaluation = evaluate_policy(out, n=eval_samples, seed=s.seed) if eval_samples else None
    info: dict[str, Any] = {
        "world_version": WORLD_VERSION,
        "rlhfkit_version": __version__,
        "key": s.key(),
        "settings": asdict(s),
        "prompt_format": "prompt + "
        + json.dumps(PROMPT_RESPONSE_SEPARATOR)
        + " + response + <eos>",
        "n_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "train_seconds": round(train_seconds, 2),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "loss_curve": loss_curve(losses),
        "evaluation": None if evaluation is None else evaluation.summary(),
    }
    write_json(out / BUILD_INFO_FILE, info)


def read_build_info(model_dir: str | Path) -> dict[str, Any]:
    """The ``world_build.json`` recorded with a built base policy."""
    return json.loads((Path(model_dir) / BUILD_INFO_FILE).read_text(encoding="utf-8"))
