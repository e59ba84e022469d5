"""Quality control end to end, through the command line and the HTTP API: gold items -> each
annotator's reliability -> an export weighted by it -> train-rm, which honours the weights.

One honest annotator and two who rank backwards (a majority that is wrong, which agreement with
the others cannot see but gold can). Trained on every ranking alike, the reward model learns the
majority's mistake; trained on the export weighted by reliability, it learns the truth."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from rlhfkit.collect.annotate.app import create_app
from rlhfkit.tiny import build_tiny_causal_lm

pytestmark = pytest.mark.slow

RESPONSES = {"g": "good answer good", "o": "ok answer", "b": "bad poor answer"}
TRUTH = ["g", "o", "b"]
WORDS = ["good", "bad", "answer", "question", "ok", "fine", "poor", "about", "tell"]


def run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, "-m", "rlhfkit", *args], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def record(prompt: str, ranking=None) -> dict:
    rec = {"prompt": prompt, "responses": [{"id": k, "text": v} for k, v in RESPONSES.items()]}
    if ranking is not None:
        rec["ranking"] = ranking
    return rec


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def train(tmp_path, name: str, data: str, lm, eval_data: str) -> dict:
    out = tmp_path / name
    run("train-rm", "--model", str(lm), "--data", data, "--eval-data", eval_data,
        "--out", str(out), "--epochs", "3", "--batch-size", "8", "--learning-rate", "3e-3",
        "--seed", "0", "--no-progress")  # fmt: skip
    return json.loads((out / "eval.json").read_text())


def test_gold_reliability_weighted_export_train_rm(tmp_path):
    prompts = [f"tell me about question {i}" + " fine" * (i % 3) for i in range(24)]
    db = str(tmp_path / "ann.db")
    run("annotate", "import", "--db", db, write_jsonl(tmp_path / "c.jsonl", map(record, prompts)))
    tokens = {}
    for name in ("honest", "backwards1", "backwards2"):
        link = run("annotate", "add-annotator", name, "--db", db).stdout.strip().splitlines()[-1]
        tokens[name] = link.split("#token=")[1]

    # 1. gold: the admin knows the right ranking of three items (a file of native records,
    # matched to the imported items by their prompt and responses)
    gold = [record(p, TRUTH) for p in prompts[:3]]
    out = run("annotate", "gold", "--db", db, write_jsonl(tmp_path / "gold.jsonl", gold))
    assert "marked 3 items as gold" in out.stdout

    # 2. everyone ranks everything (overlap 3) over HTTP; gold items are not told apart
    client = TestClient(create_app(db, overlap=3, secret=b"e" * 48))
    for name, token in tokens.items():
        h = {"Authorization": f"Bearer {token}"}
        ranking = TRUTH if name == "honest" else TRUTH[::-1]
        while (r := client.get("/api/next", headers=h)).status_code == 200:
            body = {"item_id": r.json()["item_id"], "ranking": ranking}
            assert client.post("/api/rankings", headers=h, json=body).status_code == 201

    # 3. reliability: from gold, whatever the majority says
    quality = json.loads(run("annotate", "stats", "--db", db, "--json").stdout)["quality"]
    rel = {n: (q["reliability"], q["reliability_from"]) for n, q in quality["annotators"].items()}
    assert rel == {
        "honest": (1.0, "gold"),
        "backwards1": (-1.0, "gold"),
        "backwards2": (-1.0, "gold"),
    }
    # the others' consensus alone would have blamed the honest annotator
    assert quality["annotators"]["honest"]["tau_vs_others"] == -1.0

    # 4. export: every ranking as is, and weighted by reliability
    plain, weighted = tmp_path / "plain.jsonl", tmp_path / "weighted.jsonl"
    run("annotate", "export", "--db", db, "--out", str(plain))
    run("annotate", "export", "--db", db, "--out", str(weighted), "--weight-by-reliability")
    recs = [json.loads(x) for x in weighted.read_text(encoding="utf-8").splitlines()]
    assert len(recs) == 72
    assert {(r["annotator"], r["weight"]) for r in recs} == {
        ("honest", 1.0),
        ("backwards1", 0.0),
        ("backwards2", 0.0),
    }

    # 5. train-rm: the weights decide what it learns
    heldout = write_jsonl(
        tmp_path / "heldout.jsonl",
        [record(f"tell me about new question {i}", TRUTH) for i in range(8)],
    )
    lm = build_tiny_causal_lm(
        tmp_path / "tiny", WORDS + [str(i) for i in range(30)], n_layer=1, n_embd=16
    )
    ev_weighted = train(tmp_path, "rm-weighted", str(weighted), lm, heldout)
    ev_plain = train(tmp_path, "rm-plain", str(plain), lm, heldout)
    assert ev_weighted["accuracy"] >= 0.9, ev_weighted
    assert ev_plain["accuracy"] <= 0.1, ev_plain  # it learned the wrong majority
