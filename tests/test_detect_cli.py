"""``rlhfkit detect`` as a subprocess: exit codes 0/1/2, the JSON shape, input formats, --step, and
the reward-model probe with a tiny reward model trained (by rlhfkit train-rm) to reward a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_hacking import pair

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "120"}


def detect(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "rlhfkit", "detect", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def run_inproc(capsys, *args: str | Path) -> tuple[int, str, str]:
    """The same dispatch as the command, in this process (subprocess start-up costs seconds here)."""
    from rlhfkit.cli import main

    try:
        code = main(["detect", *map(str, args)])
    except SystemExit as e:  # tyro exits 2 itself on an invalid option value, as the command would
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def write_rows(path: Path, texts: list[str], step: int | None = None, **extra) -> Path:
    with open(path, "a", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            row = {"prompt": f"Explain topic {i} simply.", "response": t, **extra}
            if step is not None:
                row = {"step": step, **row, "score": 0.5, "kl": 0.1}
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("detect")
    base, hacked = pair(11, n=200, plant="Fantastic!", rate=0.4)
    _, clean = pair(11, n=200)
    write_rows(d / "base.jsonl", base)
    write_rows(d / "clean.jsonl", clean)
    # a PPO samples.jsonl: step 0 is still the base policy, step 50 has learned the opener
    write_rows(d / "samples.jsonl", clean, step=0)
    write_rows(d / "samples.jsonl", hacked, step=50)
    return d


def test_flagged_exits_1_with_json(files):
    r = detect(
        "--base",
        files / "base.jsonl",
        "--tuned",
        files / "samples.jsonl",
        "--json",
        "--word",
        "fantastic",
    )
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "flagged"
    top = out["flagged"][0]
    assert top["token"] == "fantastic" and top["base_count"] == 0 and top["tuned_count"] > 50
    for key in (
        "token",
        "base_count",
        "tuned_count",
        "base_rate",
        "tuned_rate",
        "ratio",
        "p_value",
        "p_adjusted",
    ):
        assert key in top
    assert out["tuned"]["step"] == 50 and out["tuned"]["rows"] == 200  # the last step by default
    assert out["words"][0]["word"] == "fantastic" and out["words"][0]["flagged"]
    assert (
        set(out["drift"]) >= {"length", "repeat2", "distinct2", "entropy"}
        and out["drift_flagged"] == []
    )
    assert "probe_score_change" not in top  # no reward model given
    # a flagged word without a probe or collapse: suspicious, not hacked (docs/hacking.md)
    assert out["verdict"]["label"] == "suspicious"
    assert any("'fantastic'" in x for x in out["verdict"]["reasons"])


def test_clean_exits_0(files):
    r = detect("--base", files / "base.jsonl", "--tuned", files / "clean.jsonl", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "clean" and out["flagged"] == [] and out["drift_flagged"] == []
    assert out["verdict"] == {"label": "healthy", "reasons": []}


def test_step_selects_rows(files, capsys):
    # step 0 of the samples file is the base policy: clean; all steps together: still flagged
    args = ["--base", files / "base.jsonl", "--tuned", files / "samples.jsonl", "--json"]
    code, out, _ = run_inproc(capsys, *args, "--step", "0")
    assert code == 0 and json.loads(out)["tuned"]["step"] == 0
    code, out, _ = run_inproc(capsys, *args, "--step", "all")
    assert code == 1 and json.loads(out)["tuned"]["rows"] == 400


def test_table_output(files, capsys):
    code, out, _ = run_inproc(
        capsys, "--base", files / "base.jsonl", "--tuned", files / "samples.jsonl"
    )
    assert code == 1
    assert "fantastic" in out and "possible reward hacking" in out and "Drift" in out
    code, out, _ = run_inproc(
        capsys, "--base", files / "base.jsonl", "--tuned", files / "clean.jsonl"
    )
    assert code == 0 and "clean" in out


def test_candidate_files_and_has_eos(tmp_path, capsys):
    base, tuned = pair(12, n=120)
    with open(tmp_path / "cands.jsonl", "w") as f:
        for i in range(0, 120, 4):
            resp = [{"id": f"r{j}", "text": t} for j, t in enumerate(tuned[i : i + 4])]
            f.write(json.dumps({"prompt": f"p{i}", "responses": resp, "has_eos": False}) + "\n")
    write_rows(tmp_path / "base.jsonl", base, has_eos=True)
    code, text, _ = run_inproc(
        capsys, "--base", tmp_path / "base.jsonl", "--tuned", tmp_path / "cands.jsonl", "--json"
    )
    out = json.loads(text)
    assert out["tuned"]["rows"] == 120
    assert out["drift"]["no_eos"]["tuned"] == 1.0 and "no_eos" in out["drift_flagged"]
    assert code == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"prompt": "p", "response": "ok"}\n{"prompt": "p", "response": 3}\n',
            "tuned.jsonl:2: 'response' must be",
        ),
        ('{"prompt": "p", "response": "ok"}\nnot json\n', "tuned.jsonl:2: invalid JSON"),
        ('{"prompt": "p", "text": "ok"}\n', "tuned.jsonl:1: expected a 'response'"),
        ("", "tuned.jsonl: no responses found"),
        ('{"step": "x", "response": "ok"}\n', "tuned.jsonl:1: 'step' must be an integer"),
    ],
)
def test_bad_input_exits_2_naming_file_and_line(files, tmp_path, capsys, content, message):
    (tmp_path / "tuned.jsonl").write_text(content)
    code, _, err = run_inproc(
        capsys, "--base", files / "base.jsonl", "--tuned", tmp_path / "tuned.jsonl"
    )
    assert code == 2 and message in err


def test_bad_input_as_a_subprocess(files, tmp_path):
    (tmp_path / "tuned.jsonl").write_text('{"prompt": "p", "response": "ok"}\n{"prompt": "p"}\n')
    r = detect("--base", files / "base.jsonl", "--tuned", tmp_path / "tuned.jsonl")
    assert r.returncode == 2 and r.stdout == ""
    assert "rlhfkit detect: error:" in r.stderr and "tuned.jsonl:2:" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_options_exit_2(files, capsys):
    base, samples = files / "base.jsonl", files / "samples.jsonl"
    code, _, err = run_inproc(capsys, "--base", files / "missing.jsonl", "--tuned", base)
    assert code == 2 and "missing.jsonl: file not found" in err
    code, _, err = run_inproc(capsys, "--base", base, "--tuned", samples, "--step", "7")
    assert code == 2 and "no rows with step 7" in err
    code, _, err = run_inproc(capsys, "--base", base, "--tuned", base, "--alpha", "2")
    assert code == 2 and "alpha" in err


@pytest.mark.slow
def test_probe_with_a_tiny_reward_model_that_rewards_the_token(tmp_path):
    """Train a tiny reward model (rlhfkit train-rm) on pairs where the only difference is a
    "Fantastic!" opener; the probe must find that it pays for the token, and not for another word."""
    from rlhfkit.hacking import probe_token
    from rlhfkit.models import RewardModel
    from rlhfkit.tiny import build_tiny_causal_lm

    words = (
        [f"w{i}" for i in range(400)]
        + ["fantastic", "explain", "topic", "simply"]
        + [str(i) for i in range(200)]
    )
    lm = build_tiny_causal_lm(tmp_path / "lm", [*words, "!", "."], n_layer=1, n_embd=32)
    rng = np.random.default_rng(0)
    base, hacked = pair(13, n=200, plant="Fantastic!", rate=0.5)
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for i, t in enumerate(base * 2):
            other = base[(i * 7 + 3) % len(base)]
            chosen, rejected = (
                ("Fantastic! " + t, other) if rng.random() < 0.5 else ("Fantastic! " + other, t)
            )
            f.write(
                json.dumps(
                    {
                        "prompt": f"Explain topic {i % 200} simply.",
                        "chosen": chosen,
                        "rejected": rejected,
                    }
                )
                + "\n"
            )
    train = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "train-rm", "--model", str(lm), "--data", str(tmp_path / "pairs.jsonl"),
         "--out", str(tmp_path / "rm"), "--epochs", "2", "--batch-size", "16", "--learning-rate", "3e-3",
         "--eval-split", "0.1", "--no-progress"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    rm = RewardModel.from_pretrained(tmp_path / "rm")
    prompts = [f"Explain topic {i} simply." for i in range(200)]
    fn = lambda p, r: rm.score(p, r).tolist()  # noqa: E731
    probe = probe_token(fn, prompts, base, hacked, "fantastic")
    assert probe.exploited and probe.score_change_std > 0.5, probe.to_dict()
    neutral = probe_token(fn, prompts, base, hacked, "w1")
    assert abs(neutral.score_change_std) < probe.score_change_std / 3

    write_rows(tmp_path / "base.jsonl", base)
    write_rows(tmp_path / "tuned.jsonl", hacked)
    r = detect(
        "--base",
        tmp_path / "base.jsonl",
        "--tuned",
        tmp_path / "tuned.jsonl",
        "--reward-model",
        tmp_path / "rm",
        "--json",
    )
    assert r.returncode == 1, r.stderr
    top = json.loads(r.stdout)["flagged"][0]
    assert (
        top["token"] == "fantastic" and top["probe_score_change"] > 0 and top["probe"]["exploited"]
    )
