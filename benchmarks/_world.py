"""The synthetic world the benchmark runs on: words with a known value, so quality is known.

A response is a handful of words. Each word is *good* (value +1), *bad* (−1) or *neutral* (0), and
the gold quality of a response is the mean value of its words. Rankings of K responses are ordered
by gold quality (all K qualities distinct, so every ranking has K(K−1)/2 strict pairs); a reward
model that learns the word values ranks held-out responses correctly, and a policy that learns to
say good words gets a higher reward. Everything is built locally: no download.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

GOOD = [f"good{i}" for i in range(16)]
BAD = [f"bad{i}" for i in range(16)]
NEUTRAL = [f"word{i}" for i in range(32)]
TOPICS = [f"topic{i}" for i in range(64)]
PROMPT_WORDS = ["tell", "me", "about", ":"]
VALUE = {**{w: 1.0 for w in GOOD}, **{w: -1.0 for w in BAD}, **{w: 0.0 for w in NEUTRAL}}
VOCAB = PROMPT_WORDS + TOPICS + GOOD + BAD + NEUTRAL


def prompt_text(topic: str) -> str:
    # Ends with ":" so that prompt + response concatenates into separate words with or without
    # a space (the word-level tokenizer splits punctuation).
    return f"tell me about {topic} :"


def gold_quality(response: str) -> float:
    """Mean word value of a response (0 for an empty one); unknown tokens count as neutral."""
    words = response.split()
    return sum(VALUE.get(w, 0.0) for w in words) / len(words) if words else 0.0


def _response(rng: random.Random) -> str:
    skill = rng.random()  # share of good among the non-neutral words
    n = rng.randint(4, 10)
    words = []
    for _ in range(n):
        if rng.random() < 0.5:
            words.append(rng.choice(NEUTRAL))
        else:
            words.append(rng.choice(GOOD) if rng.random() < skill else rng.choice(BAD))
    return " " + " ".join(words)


def make_rankings(n: int, k: int, seed: int) -> list[dict]:
    """``n`` native rankings of ``k`` responses, best first by gold quality (no ties)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        while True:
            texts = [_response(rng) for _ in range(k)]
            q = [gold_quality(t) for t in texts]
            if len(set(q)) == k:
                break
        ids = [f"r{j}" for j in range(k)]
        order = sorted(range(k), key=lambda j: -q[j])
        out.append(
            {
                "id": f"{seed}-{i}",
                "prompt": prompt_text(topic),
                "responses": [{"id": ids[j], "text": texts[j]} for j in range(k)],
                "ranking": [ids[j] for j in order],
            }
        )
    return out


def to_pairs(rankings: list[dict]) -> list[dict]:
    """TRL's explicit-prompt pairs: every (better, worse) pair of every ranking, K(K−1)/2 each."""
    pairs = []
    for r in rankings:
        text = {x["id"]: x["text"] for x in r["responses"]}
        order = r["ranking"]
        for a in range(len(order)):
            for b in range(a + 1, len(order)):
                pairs.append(
                    {"prompt": r["prompt"], "chosen": text[order[a]], "rejected": text[order[b]]}
                )
    return pairs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_model(out_dir: Path, n_layer: int, n_embd: int, n_head: int, seed: int = 0) -> Path:
    """A randomly initialised GPT-2 over the world's vocabulary (rlhfkit.tiny)."""
    from rlhfkit.tiny import build_tiny_causal_lm

    if not (out_dir / "config.json").exists():
        build_tiny_causal_lm(
            out_dir, VOCAB, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=64, seed=seed
        )
    return out_dir


def count_params(model_dir: Path) -> dict[str, int]:
    """Total and non-embedding parameters of a saved causal LM."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    d, L, V, P = cfg.n_embd, cfg.n_layer, cfg.vocab_size, cfg.n_positions
    # GPT-2 block: attention 4d² + 4d (qkv + proj), MLP 8d² + 5d, two layer norms 4d.
    per_block = 12 * d * d + 13 * d
    non_embedding = L * per_block + 2 * d  # + final layer norm
    return {
        "non_embedding": non_embedding,
        "total": non_embedding + V * d + P * d,  # lm_head tied to the token embedding
        "n_layer": L,
        "n_embd": d,
        "vocab": V,
    }
