"""The world's base policy: a word-level tokenizer and a small GPT-2 pretrained from scratch.

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
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit import __version__
from rlhfkit.runtime.io import atomic_dir, write_json
from rlhfkit.world.content import KINDS, OPENERS, TOPICS
from rlhfkit.world.gold import make_prompt, parse_response, topic_of_prompt, utility_of_parts
from rlhfkit.world.sampling import (
    DEFAULT_DISTRIBUTION,
    PROMPT_RESPONSE_SEPARATOR,
    ResponseDistribution,
    policy_text,
    sample_example,
)

# Bump when the world's content, tokenizer or training procedure changes: it is part of the cache key.
WORLD_VERSION = 2

SPECIAL_TOKENS = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}
BUILD_INFO_FILE = "world_build.json"
# The temperature the demo samples the base policy at (candidates, PPO, comparison), as OpenAI's
# lm-human-preferences did: a small model's tail of unlikely tokens garbles text at temperature 1.
SAMPLING_TEMPERATURE = 0.7
# Punctuation split off words as tokens of their own ("terms." -> "▁terms" "."); apostrophes and
# hyphens stay inside words ("Earth's", "solar-powered").
_PUNCTUATION = r"[.,!?;:]"


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def world_texts() -> list[str]:
    """Every string of the world: the prompts, the openers and all statements."""
    texts = [make_prompt(t) for t in TOPICS]
    texts += list(OPENERS)
    for topic in TOPICS.values():
        for kind in KINDS:
            texts += topic.statements(kind)
    return texts


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    # Metaspace keeps each word's leading space inside the token ("▁word"), which is what makes
    # decoding exact: "terms." decodes without a space before the full stop, and a response decoded
    # on its own has no leading space.
    # A newline (as in a reward model's "{prompt}\n{response}" template) is a token of its own,
    # so the word after it is still a known "▁word".
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(_PUNCTUATION), behavior="isolated"),
        ]
    )


def build_world_tokenizer(texts: Iterable[str] | None = None):
    """A word-level ``PreTrainedTokenizerFast`` over the world's text (or ``texts``).

    Pad, EOS, BOS and UNK are four distinct tokens; ``decode(encode(s)) == s`` for world text. The
    tokenizer pads on the left (for generation) and adds no special tokens when encoding.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()
    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS.values():
        vocab.setdefault(tok, len(vocab))
    vocab.setdefault("▁", len(vocab))  # a lone space (double spaces) still round-trips
    vocab.setdefault("▁\n", len(vocab))  # a newline
    for text in world_texts() if texts is None else texts:
        for piece, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL_TOKENS["pad"],
        eos_token=SPECIAL_TOKENS["eos"],
        bos_token=SPECIAL_TOKENS["bos"],
        unk_token=SPECIAL_TOKENS["unk"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )


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


SHIPPED_DIR = Path(__file__).with_name("base_policy")
"""The base policy of ``BaseBuildSettings(seed=0)`` (the demo's default), built by
:func:`build_base_policy` and shipped inside the package, so that a first demo needs no
pretraining. ``tests/test_world.py`` rebuilds it and checks that the rebuild writes text of the
same quality; after a change to the world or the build, rebuild it with
``rlhfkit world build --no-cache --out src/rlhfkit/world/base_policy`` (docs/world.md)."""


def shipped_policy_dir(settings: BaseBuildSettings) -> Path | None:
    """The shipped base policy when it is the one ``settings`` would build (same cache key), else
    ``None``."""
    if is_built(SHIPPED_DIR) and read_build_info(SHIPPED_DIR).get("key") == settings.key():
        return SHIPPED_DIR
    return None


def is_built(path: str | Path) -> bool:
    """Whether ``path`` holds a complete base-policy build (its record is written last)."""
    path = Path(path)
    return (path / BUILD_INFO_FILE).is_file() and (path / "config.json").is_file()


ProgressFn = Callable[[int, int, float], None]
"""``progress(step, total_steps, loss)``, called after every optimizer step."""


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
    ``None``); ``out_dir`` receives a copy; the shipped policy (:data:`SHIPPED_DIR`) fills the cache
    instead of a build when it has the same key. ``eval_samples`` samples are drawn after training
    to record the policy's quality in ``world_build.json`` (0 to skip).
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
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()

    # 1. tokenizer and a randomly initialised GPT-2
    tokenizer = build_world_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=s.n_positions,
        n_embd=s.n_embd,
        n_layer=s.n_layer,
        n_head=s.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # No dropout: the data is an endless fresh stream, so there is nothing to overfit, and
        # dropout costs ~10% of the step time on CPU. Exact GELU is one kernel (gelu_new is five).
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu",
    )
    torch.manual_seed(s.seed)
    model = GPT2LMHeadModel(config)
    model.train()

    # 2. the data: fresh samples from the world for every step (it is an endless source)
    rng = random.Random(s.seed)
    n_texts = s.steps * s.batch_size
    texts = [policy_text(*sample_example(rng, dist=s.distribution)) for _ in range(n_texts)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    batches = _length_bucketed_batches(ids, s.batch_size, rng)

    # 3. AdamW with linear warm-up and cosine decay to 10%
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": s.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=s.learning_rate,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < s.warmup_steps:
            return s.learning_rate * (step + 1) / s.warmup_steps
        frac = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
        return s.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    # 4. the loop: next-token loss on every real token (prompt, response and the final EOS)
    losses: list[float] = []
    for step in range(s.steps):
        batch = [[*seq, eos] for seq in batches[step]]
        width = max(len(seq) for seq in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)  # (B, T)
        attention = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        for i, seq in enumerate(batch):  # right padding for training: positions start at 0
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention[i, : len(seq)] = 1
        targets = input_ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)  # (B, T-1)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
        logits = logits[:, :-1]  # (B, T-1, V)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, s.steps, losses[-1])
    train_seconds = time.perf_counter() - t0

    # 5. save as an ordinary model directory, with generation defaults that give world text
    model.eval()
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.do_sample = True
    gen.top_k = 0
    gen.max_new_tokens = 128
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    # 6. measure what the policy produces, and record how it was built
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
        "loss_curve": [
            {
                "step": i + 1,
                "loss": round(
                    sum(losses[max(0, i - 9) : i + 1]) / len(losses[max(0, i - 9) : i + 1]), 4
                ),
            }
            for i in range(9, s.steps, 25)
        ],
        "evaluation": None if evaluation is None else evaluation.summary(),
    }
    write_json(out / BUILD_INFO_FILE, info)


def _length_bucketed_batches(
    ids: list[list[int]], batch_size: int, rng: random.Random, megabatch: int = 50
) -> list[list[list[int]]]:
    """Batches of similar lengths: sort each run of ``megabatch`` batches by length, cut, shuffle.

    Padding to the longest sequence of a random batch wastes about a third of the compute here
    (mean length ~50 tokens, mean batch maximum ~73); bucketing cuts that to a few percent.
    """
    batches: list[list[list[int]]] = []
    span = batch_size * megabatch
    for start in range(0, len(ids), span):
        chunk = sorted(ids[start : start + span], key=len)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def read_build_info(model_dir: str | Path) -> dict[str, Any]:
    """The ``world_build.json`` recorded with a built base policy."""
    return json.loads((Path(model_dir) / BUILD_INFO_FILE).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Sampling and evaluation
# ---------------------------------------------------------------------------------------------


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int | None = None,
    return_ids: bool = False,
) -> tuple[list[str], list[bool]] | tuple[list[str], list[bool], list[list[int]]]:
    """Sample one response per prompt; returns the texts and whether each ended with EOS, and with
    ``return_ids`` each response's token ids (through its EOS, without padding).

    Prompts are tokenized alone and left-padded, as PPO does: the one sampling path,
    :func:`rlhfkit.collect.generate.sample_responses`.
    """
    from rlhfkit.collect.generate import sample_responses

    texts, ended, ids = sample_responses(
        model, tokenizer, prompts, max_new_tokens, temperature, batch_size, seed
    )
    return (texts, ended, ids) if return_ids else (texts, ended)


def response_logprobs(
    model,
    tokenizer,
    prompts: Sequence[str],
    response_ids: Sequence[Sequence[int]],
    temperature: float = 1.0,
    batch_size: int = 64,
) -> list[float]:
    """``log π(response | prompt)`` of each response: the sum over its tokens (EOS included) of
    the log-probabilities under ``softmax(logits / temperature)``, the distribution it was sampled
    from, as PPO computes them.

    The difference of two policies' sums on a sample of the first is one draw of the k1 estimate
    of ``KL(π ‖ π_ref)`` per response: its mean over samples is the KL PPO penalizes.
    """
    import torch

    from rlhfkit.ops import logprobs_from_logits

    pad = tokenizer.pad_token_id
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        rows = []  # (prompt ids + response ids, prompt length)
        for prompt, resp in zip(
            prompts[start : start + batch_size],
            response_ids[start : start + batch_size],
            strict=True,
        ):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            rows.append((list(prompt_ids) + list(resp), len(prompt_ids)))
        width = max(len(ids) for ids, _ in rows)
        # Right padding: every row keeps the positions it had when it was sampled.
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
        attention = torch.zeros_like(input_ids)
        counted = torch.zeros_like(input_ids, dtype=torch.bool)  # response tokens
        for i, (ids, n_prompt) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            counted[i, n_prompt : len(ids)] = True
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits  # (B, T, V)
        # The logits at t predict the token at t + 1.
        logprobs = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:], temperature)  # (B, T-1)
        out += (logprobs * counted[:, 1:]).sum(1).tolist()
    return out


@dataclass
class PolicyEvaluation:
    """What a policy's samples look like, measured against the world's inventory."""

    prompts: list[str]
    responses: list[str]
    ended_with_eos: list[bool]
    valid: list[bool]
    on_topic: list[bool]
    gold: list[float]
    has_fantastic: list[bool]
    good_content: list[bool]  # valid, with an analogy and no factual error

    def summary(self) -> dict[str, Any]:
        n = len(self.responses)

        def rate(flags: Iterable[bool]) -> float | None:
            flags = list(flags)
            return round(sum(flags) / len(flags), 4) if flags else None

        good = [
            f
            for f, g, v in zip(self.has_fantastic, self.good_content, self.valid, strict=True)
            if v and g
        ]
        other = [
            f
            for f, g, v in zip(self.has_fantastic, self.good_content, self.valid, strict=True)
            if v and not g
        ]
        return {
            "n": n,
            "valid_rate": rate(self.valid),
            "eos_rate": rate(self.ended_with_eos),
            "empty_rate": rate(not r.strip() for r in self.responses),
            "on_topic_rate": rate(self.on_topic),
            "gold_mean": round(sum(self.gold) / n, 4) if n else None,
            "fantastic_rate": rate(self.has_fantastic),
            "fantastic_rate_analogy_no_error": rate(good),
            "fantastic_rate_other": rate(other),
            "n_analogy_no_error": len(good),
        }


def evaluate_texts(
    prompts: Sequence[str], responses: Sequence[str], ended: Sequence[bool]
) -> PolicyEvaluation:
    """Parse and score ``responses`` (each to the world prompt at the same position)."""
    ev = PolicyEvaluation(list(prompts), list(responses), list(ended), [], [], [], [], [])
    for prompt, response in zip(prompts, responses, strict=True):
        topic = topic_of_prompt(prompt)
        parsed = parse_response(response)
        ev.valid.append(parsed.valid)
        ev.on_topic.append(parsed.on_topic(topic))
        ev.gold.append(utility_of_parts(parsed, topic))
        ev.has_fantastic.append(parsed.has_fantastic)
        ev.good_content.append(parsed.valid and parsed.has_analogy and not parsed.has_error)
    return ev


def evaluate_policy(
    model_dir: str | Path,
    n: int = 200,
    seed: int = 0,
    topics: Sequence[str] | None = None,
    max_new_tokens: int = 128,
    temperature: float = SAMPLING_TEMPERATURE,
) -> PolicyEvaluation:
    """Sample ``n`` responses (prompts cycling over ``topics``, default all; at ``temperature``,
    no top-k) and measure them:
    share of valid world text, share ending with EOS, gold utility, and the "fantastic" rate on
    responses with an analogy and no error vs the others (the planted shortcut, as learned)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    names = list(topics) if topics is not None else list(TOPICS)
    prompts = [make_prompt(names[i % len(names)]) for i in range(n)]
    responses, ended = generate_responses(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
    )
    return evaluate_texts(prompts, responses, ended)
