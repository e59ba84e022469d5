"""Every command that reads a user's file, fuzzed through the real command line (in-process):
prompts (``ppo``, ``generate``), candidates (``annotate import``, ``score``), YAML configs
(``--config``), samples (``detect``), run metrics (``report``).

Whatever the bytes: exit status 0 (the input happened to be valid) or 2 with one
``rlhfkit CMD: error: FILE[:LINE]: ...`` line — never a traceback — and no output file is left
behind by a failed run. The preference readers have their own fuzz tests (test_data_fuzz.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhfkit.cli import main as rlhfkit_main

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Any JSON value, including the awkward ones: huge integers, NaN-free floats, nesting, unicode.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def near_valid(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The template with some fields dropped, some replaced by any JSON value, some added."""
    keys = sorted(template)
    return st.builds(
        lambda drop, repl, extra: {
            **{k: repl.get(k, v) for k, v in template.items() if k not in drop},
            **extra,
        },
        st.sets(st.sampled_from(keys), max_size=2),
        st.dictionaries(st.sampled_from(keys), json_values, max_size=2),
        st.dictionaries(st.text(max_size=6), json_values, max_size=1),
    )


def jsonl_bytes(template: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or a file of valid lines with one near-valid or broken line among them
    (the line number in the error must be that one's)."""
    valid = json.dumps(template)
    odd = st.one_of(
        near_valid(template).map(lambda d: json.dumps(d, ensure_ascii=False)),
        json_values.map(json.dumps),
        st.text(max_size=20),
    )
    records = st.tuples(st.integers(0, 3), odd, st.integers(0, 2)).map(
        lambda t: "\n".join([valid] * t[0] + [t[1]] + [valid] * t[2]).encode("utf-8")
    )
    return st.one_of(st.binary(max_size=120), records, records)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``rlhfkit ARGV`` in-process; returns (exit status, stderr). Anything escaping the CLI's
    error handling — a traceback for the user — fails the test."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = rlhfkit_main(argv)
        except SystemExit as e:  # argument errors from tyro
            code = int(e.code or 0)
    return code, err.getvalue()


def assert_clear_error(code: int, err: str, path: Path, allow_ok: bool = True) -> None:
    assert code in ((0, 2) if allow_ok else (2,)), err
    assert "Traceback" not in err
    if code == 2:
        assert str(path) in err, err  # names the file
        assert err.count("error:") == 1, err


def fresh(tmp_path: Path, name: str, data: bytes) -> Path:
    d = tmp_path / uuid.uuid4().hex
    d.mkdir()
    p = d / name
    p.write_bytes(data)
    return p


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory) -> str:
    f = tmp_path_factory.mktemp("fuzz") / "r.py"
    f.write_text("def r(p, q):\n    return [0.0] * len(q)\n")
    return f"{f}:r"


# ------------------------------------------------------------------------------------- prompts


@settings(FUZZ, max_examples=20)
@given(data=jsonl_bytes({"prompt": "Explain gravity."}))
def test_ppo_prompts_file(tmp_path, reward_file, data):
    prompts = fresh(tmp_path, "prompts.jsonl", data)
    out = prompts.parent / "run"
    # A policy that does not exist: valid prompts get past the reader and stop at the model.
    code, err = run_cli(["ppo", "--policy", str(prompts.parent / "no-model"), "--prompts",
                         str(prompts), "--reward-fn", reward_file, "--out", str(out),
                         "--no-progress"])  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert str(prompts) in err or "no-model" in err, err
    assert not out.exists()


@FUZZ
@given(data=jsonl_bytes({"prompt": "Explain gravity."}), suffix=st.sampled_from([".jsonl", ".txt"]))
def test_generate_prompts_file(tmp_path, data, suffix):
    prompts = fresh(tmp_path, "prompts" + suffix, data)
    out = prompts.parent / "cands.jsonl"
    code, err = run_cli(["generate", "--model", str(prompts.parent / "no-model"), "--prompts",
                         str(prompts), "--out", str(out)])  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert str(prompts) in err or "no-model" in err, err
    assert not out.exists()


# ---------------------------------------------------------------------------------- candidates

CANDIDATE = {"prompt": "Explain gravity.", "responses": [{"id": "a", "text": "Things fall."},
                                                         {"id": "b", "text": "Mass."}]}  # fmt: skip


@FUZZ
@given(data=jsonl_bytes(CANDIDATE))
def test_annotate_import_candidates(tmp_path, data):
    cands = fresh(tmp_path, "cands.jsonl", data)
    db = cands.parent / "ann.db"
    code, err = run_cli(["annotate", "import", str(cands), "--db", str(db)])
    assert_clear_error(code, err, cands)
    if code == 2:  # the file is validated before the database is created: nothing left behind
        assert not db.exists()


@FUZZ
@given(
    data=jsonl_bytes(CANDIDATE)
    | jsonl_bytes({"prompt": "p", "response": "r"})
    | jsonl_bytes({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."})
)
def test_score_candidates(tmp_path, data):
    cands = fresh(tmp_path, "cands.jsonl", data)
    out = cands.parent / "scored.jsonl"
    code, err = run_cli(["score", "--model", str(cands.parent / "no-model"), "--data",
                         str(cands), "--out", str(out)])  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert str(cands) in err or "no-model" in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------- YAML configs

yaml_text = st.one_of(
    st.binary(max_size=120),
    st.dictionaries(
        st.sampled_from(["batch-size", "batch_size", "epochs", "learning_rate", "model", "seed",
                         "kl-coef", "response_length", "resume", "nope", "eval_split"]),
        json_values,
        max_size=4,
    ).map(lambda d: json.dumps(d).encode()),  # JSON is YAML
    st.lists(st.text(max_size=15), max_size=4).map(lambda xs: "\n".join(xs).encode()),
)  # fmt: skip


@FUZZ
@given(data=yaml_text, command=st.sampled_from(["train-rm", "ppo"]))
def test_yaml_config(tmp_path, data, command):
    cfg = fresh(tmp_path, "run.yaml", data)
    missing = cfg.parent / "no-such"
    out = cfg.parent / "out"
    if command == "train-rm":
        argv = ["train-rm", "--model", str(missing), "--data", str(missing / "d.jsonl")]
    else:
        argv = ["ppo", "--policy", str(missing), "--prompts", str(missing / "p.jsonl"),
                "--reward-fn", f"{missing}.py:f"]  # fmt: skip
    code, err = run_cli([*argv, "--out", str(out), "--config", str(cfg)])
    assert code == 2 and "Traceback" not in err
    assert str(cfg) in err or "no-such" in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------------ samples


@FUZZ
@given(
    data=jsonl_bytes({"prompt": "p", "response": "Fantastic question! Things fall.", "step": 3})
    | jsonl_bytes({"prompt": "p", "responses": ["a b", "c d"], "has_eos": True})
)
def test_detect_samples(tmp_path, data):
    tuned = fresh(tmp_path, "tuned.jsonl", data)
    base = tuned.parent / "base.jsonl"
    base.write_text(json.dumps({"prompt": "p", "response": "Things fall down."}) + "\n")
    code, err = run_cli(["detect", "--base", str(base), "--tuned", str(tuned), "--json"])
    assert code in (0, 1, 2) and "Traceback" not in err, err
    if code == 2:
        assert str(tuned) in err and err.count("error:") == 1, err


# ------------------------------------------------------------------------------------ metrics


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    metrics=jsonl_bytes({"step": 1, "objective/scores": 0.5, "objective/kl": 0.1,
                         "objective/gold_scores": 0.2}),
    samples=jsonl_bytes({"step": 1, "prompt": "p", "response": "r", "score": 1.0, "kl": 0.1}),
)  # fmt: skip
def test_report_metrics_and_samples(tmp_path, metrics, samples):
    run_dir = fresh(tmp_path, "metrics.jsonl", metrics).parent
    (run_dir / "samples.jsonl").write_bytes(samples)
    code, err = run_cli(["report", str(run_dir)])
    assert code in (0, 2) and "Traceback" not in err, err
    if code == 2:
        assert str(run_dir) in err and err.count("error:") == 1, err
        assert not (run_dir / "report.html").exists()
    else:
        assert (run_dir / "report.html").stat().st_size > 0
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
