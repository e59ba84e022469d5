"""``rlhfkit generate``: K sampled responses per prompt from a tiny local model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhfkit.generate import generate_candidates
from rlhfkit.loading import choose_pad_id


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    return tiny_lm(n_layer=1, n_embd=16)


def test_shapes_ids_and_determinism(tiny):
    prompts = ["the big dog", "tell me about hills :", "a cat"]
    a = list(generate_candidates(tiny, prompts, k=3, max_new_tokens=6, seed=1, batch_size=2))
    assert [r["prompt"] for r in a] == prompts
    for rec in a:
        assert [r["id"] for r in rec["responses"]] == ["r0", "r1", "r2"]
        assert all(isinstance(r["text"], str) for r in rec["responses"])
        assert all("<pad>" not in r["text"] and "<eos>" not in r["text"] for r in rec["responses"])
    b = list(generate_candidates(tiny, prompts, k=3, max_new_tokens=6, seed=1, batch_size=2))
    assert a == b
    c = list(generate_candidates(tiny, prompts, k=3, max_new_tokens=6, seed=2, batch_size=2))
    assert a != c  # sampling, not greedy
    texts = {r["text"] for rec in a for r in rec["responses"]}
    assert len(texts) > 3  # a random model sampled at T=1 gives varied text


def test_left_padding_does_not_change_the_continuation(tiny):
    """A short prompt batched with a long one (so left-padded) gets the same distribution as alone:
    at a near-zero temperature the sample is the greedy continuation either way."""
    alone = list(generate_candidates(tiny, ["a cat"], k=1, max_new_tokens=5, temperature=1e-4))
    batched = list(
        generate_candidates(
            tiny,
            ["tell me about hills : the red mat", "a cat"],
            k=1,
            max_new_tokens=5,
            temperature=1e-4,
        )
    )
    assert batched[1] == alone[0]


def test_pad_is_never_eos_nor_outside_the_embedding():
    class Tok:
        eos_token_id = 5
        pad_token_id = 5
        unk_token_id = None
        bos_token_id = 5
        all_special_ids = (5,)

    assert choose_pad_id(Tok(), [5], rows=10) == 0
    Tok.pad_token_id = 3
    assert choose_pad_id(Tok(), [5], rows=10) == 3
    # a pad token the tokenizer class added past the embedding (Qwen2's default) is not used
    Tok.pad_token_id, Tok.bos_token_id = 10, 7
    assert choose_pad_id(Tok(), [5], rows=10) == 7
    # nor a stop token other than EOS (an instruct model's end of turn)
    assert choose_pad_id(Tok(), [5, 7], rows=10) == 0


def test_cli_writes_candidates_that_import(tiny, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "the big dog"}\n{"prompt": "a dog"}\n', encoding="utf-8")
    out = tmp_path / "c.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "rlhfkit",
        "generate",
        "--model",
        str(tiny),
        "--prompts",
        str(prompts),
        "-k",
        "2",
        "--out",
        str(out),
        "--max-new-tokens",
        "4",
        "--seed",
        "3",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 2 and all(len(x["responses"]) == 2 for x in recs)
    db = tmp_path / "a.db"
    r = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "annotate", "import", "--db", str(db), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "imported 2 items" in r.stdout, r.stderr
    bad = subprocess.run(
        [*cmd[:-6], "-k", "0", "--out", str(tmp_path / "x.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and not (tmp_path / "x.jsonl").exists()
