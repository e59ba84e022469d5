"""``--report-to``: every tracker receives metrics.jsonl's metric names at metrics.jsonl's steps, and
the run's settings as hyperparameters. Each tracker is read back offline with its own reader:
TensorBoard's EventAccumulator, ``wandb leet inspect`` on W&B's offline transaction log, trackio's
local SQLite storage and MLflow's client on a local store."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfkit.errors import ConfigError
from rlhfkit.runtime.trackers import hyperparameters, resolve_report_to, tracker_values


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _expected(run_dir: Path) -> dict[str, dict[int, float]]:
    """metric name -> {step: value}, as metrics.jsonl has them (None left out, as trackers do)."""
    out: dict[str, dict[int, float]] = {}
    for rec in _metrics(run_dir):
        for key, value in tracker_values(rec).items():
            out.setdefault(key, {})[rec["step"]] = value
    return out


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def _check(got: dict[str, dict[int, float]], expected: dict[str, dict[int, float]]) -> None:
    assert sorted(got) == sorted(expected)
    for key, by_step in expected.items():
        assert sorted(got[key]) == sorted(by_step), key
        assert all(_same(got[key][s], v) for s, v in by_step.items()), key


# ----------------------------------------------------------------------------------- pure parts


def test_report_to_names_and_missing_packages(monkeypatch):
    assert resolve_report_to(["none"]) == [] and resolve_report_to(None) == []
    assert resolve_report_to("tensorboard") == ["tensorboard"]
    assert resolve_report_to(["tensorboard", "tensorboard"]) == ["tensorboard"]
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        resolve_report_to(["comet"])
    with pytest.raises(ConfigError, match="'none' together with wandb"):
        resolve_report_to(["none", "wandb"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(ConfigError) as e:
        resolve_report_to(["tensorboard", "wandb"])
    assert str(e.value) == "--report-to wandb needs the wandb package: pip install 'rlhfkit[wandb]'"


def test_tracker_values_and_hyperparameters():
    from rlhfkit.ppo import PPOConfig

    rec = {"step": 3, "epoch": 0.5, "rm/loss": None, "rm/accuracy": 0.75, "note": "x", "ok": True}
    assert tracker_values(rec) == {"epoch": 0.5, "rm/accuracy": 0.75}
    params = hyperparameters(PPOConfig(policy="p", prompts="q", out="o", report_to=["wandb"]))
    assert params["kl_coef"] == 0.05 and params["report_to"] == "wandb"
    assert params["reward_model"] is None
    assert all(isinstance(v, (bool, int, float, str, type(None))) for v in params.values())


@pytest.mark.parametrize("command", ["train-rm", "ppo", "demo"])
def test_a_missing_tracker_package_is_one_line_naming_the_extra(command, tmp_path):
    """The package is hidden from a real ``rlhfkit`` process (``importlib.util.find_spec`` does
    not find it, as when it is not installed); the command stops before reading or loading
    anything."""
    from rlhfkit.tiny import build_tiny_causal_lm

    lm = build_tiny_causal_lm(tmp_path / "lm", ["a", "b"])
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import importlib.util\n"
        "real = importlib.util.find_spec\n"
        "def find_spec(name, package=None):\n"
        "    return None if name.split('.')[0] == 'trackio' else real(name, package)\n"
        "importlib.util.find_spec = find_spec\n"
    )
    args = {
        "train-rm": ["--model", str(lm), "--data", str(tmp_path / "none.jsonl")],
        "ppo": ["--policy", str(lm), "--reward-fn", "x.py:f", "--prompts", "p.txt"],
        "demo": [],
    }[command]
    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit", command, *args, "--out", str(tmp_path / "out"),
         "--report-to", "tensorboard", "trackio"],
        capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(hide)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"rlhfkit {command}: error: --report-to trackio needs the trackio package: "
        "pip install 'rlhfkit[trackio]'"
    ]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------- the trackers, read back


@pytest.mark.parametrize("run", ["rm", "ppo"])
def test_tensorboard_event_files_hold_metrics_jsonl(tracked_runs, run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tracked_runs["root"] / run
    events = EventAccumulator(str(run_dir / "runs"), size_guidance={"scalars": 0}).Reload()
    got = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    expected = _expected(run_dir)
    _check(got, expected)
    names = set(expected)
    if run == "rm":
        assert {"rm/loss", "rm/accuracy", "rm/margin", "rm/lr", "epoch"} <= names
    else:
        assert {"objective/kl", "objective/scores", "objective/gold_scores", "lr"} <= names
        assert {"hacking/flagged", "hacking/suspected"} <= names  # the live monitor's checks
    # The settings as hyperparameters (accelerate keeps a copy in hparams.yml beside the events).
    import yaml

    (hparams,) = (run_dir / "runs").glob("*/hparams.yml")
    params = yaml.safe_load(hparams.read_text())
    assert params["learning_rate"] == 3e-3 if run == "rm" else params["kl_coef"] == 0.1
    assert params["report_to"] == "tensorboard,wandb,trackio,mlflow"


@pytest.mark.parametrize("run", ["rm", "ppo"])
def test_wandb_offline_run_holds_metrics_jsonl(tracked_runs, run):
    run_dir = tracked_runs["root"] / run
    name = "tiny-ppo" if run == "ppo" else "rm"
    logs = sorted((tracked_runs["root"] / "wandb" / "wandb").glob("offline-run-*/run-*.wandb"))
    records = []
    for log in logs:  # wandb's own reader of its transaction log
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(log)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
        if any(r["type"] == "run" and r["run"].get("display_name") == name for r in lines):
            records = lines
    assert records, f"no offline W&B run named {name!r} in {logs}"
    (run_record,) = [r["run"] for r in records if r["type"] == "run"]
    assert run_record["project"] == "rlhfkit"
    got: dict[str, dict[int, float]] = {}
    for r in records:
        if r["type"] == "history":
            item, step = r["history"]["item"], int(r["history"]["step"]["num"])
            for key, value in item.items():
                if not key.startswith("_"):
                    got.setdefault(key, {})[step] = float(value)
    _check(got, _expected(run_dir))
    config = {}
    for r in records:
        if r["type"] == "config":
            config.update(r["config"]["update"])
    assert config["out"] == str(run_dir) and config["rlhfkit_version"]


@pytest.mark.parametrize("run", ["rm", "ppo"])
def test_trackio_local_run_holds_metrics_jsonl(tracked_runs, run, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tracked_runs["root"] / "trackio"))
    from trackio.sqlite_storage import SQLiteStorage

    name = "tiny-ppo" if run == "ppo" else "rm"
    assert name in SQLiteStorage.get_runs("rlhfkit")
    got: dict[str, dict[int, float]] = {}
    for row in SQLiteStorage.get_logs("rlhfkit", name):
        for key, value in row.items():
            if key not in ("step", "timestamp"):
                got.setdefault(key, {})[row["step"]] = float(value)
    _check(got, _expected(tracked_runs["root"] / run))
    config = SQLiteStorage.get_run_config("rlhfkit", name)
    assert config["out"] == str(tracked_runs["root"] / run)


@pytest.mark.parametrize("run", ["rm", "ppo"])
def test_mlflow_local_run_holds_metrics_jsonl(tracked_runs, run, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient((tracked_runs["root"] / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "rlhfkit"]
    name = "tiny-ppo" if run == "ppo" else "rm"
    (found,) = [
        r for r in client.search_runs([experiment.experiment_id])
        if r.info.run_name == name
    ]  # fmt: skip
    expected = _expected(tracked_runs["root"] / run)
    assert sorted(found.data.metrics) == sorted(expected)
    for key, by_step in expected.items():
        history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, key)}
        assert sorted(history) == sorted(by_step), key
        assert all(_same(history[s], v) for s, v in by_step.items()), key
    assert found.data.params["out"] == str(tracked_runs["root"] / run)


def test_trackers_keep_stdout_for_results(tracked_runs):
    """train-rm's one JSON line is still all of its stdout with four trackers attached (trackio
    and W&B print to stderr or nowhere)."""
    (line,) = tracked_runs["rm"].stdout.strip().splitlines()
    assert "accuracy" in json.loads(line)
    assert tracked_runs["ppo"].stdout == ""


@pytest.mark.slow
def test_demo_reports_every_run_and_cards_every_model(quick_demo):
    """``rlhfkit demo --quick --report-to tensorboard`` (conftest): the reward model and each PPO
    run have their own event files holding their metrics.jsonl, and each saved model its card."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = quick_demo
    runs = [out / "reward-model", *sorted((out / "ppo").iterdir())]
    assert [r.name for r in runs] == ["reward-model", "low-beta", "sensible-beta"]
    for run_dir in runs:
        events = EventAccumulator(str(run_dir / "runs"), size_guidance={"scalars": 0}).Reload()
        got = {t: {e.step: e.value for e in events.Scalars(t)} for t in events.Tags()["scalars"]}
        _check(got, _expected(run_dir))
    assert "reward-model" in (out / "reward-model" / "README.md").read_text()
    for run_dir in runs[1:]:
        card = (run_dir / "policy" / "README.md").read_text()
        assert "library_name: rlhfkit" in card and "hacking monitor" in card
