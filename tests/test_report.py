"""report.html: self-contained, escaped, plots for what was logged; the CLI and its errors."""

import json
import subprocess
import sys

import pytest

from rlhfkit.errors import DataError
from rlhfkit.report import load_run, render_run_report


def _write_run(d, gold=False, hacking=False):
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "metrics.jsonl", "w") as f:
        for step in range(1, 11):
            row = {
                "step": step,
                "episode": step * 8,
                "objective/scores": 0.1 * step,
                "objective/kl": 0.05 * step**1.5,
                "objective/kl_coef": 0.1,
                "objective/rlhf_reward": 0.1 * step - 0.1 * 0.05 * step**1.5,
                "response/length_mean": 12.0,
                "policy/clipfrac": 0.02,
            }
            if gold:
                row["objective/gold_scores"] = 0.05 * step - 0.004 * step**2
            if hacking and step % 5 == 0:
                row["hacking/flagged"] = 1.0 if step == 10 else 0.0
                row["hacking/top_ratio"] = 3.0
            f.write(json.dumps(row) + "\n")
    with open(d / "samples.jsonl", "w") as f:
        for step in (1, 10):
            f.write(
                json.dumps(
                    {
                        "step": step,
                        "prompt": "Explain <b>tides</b>",
                        "response": "<script>alert(1)</script> <img src=x onerror=alert(2)>",
                        "score": 1.5,
                        "kl": 0.3,
                    }
                )
                + "\n"
            )


def test_report_is_self_contained_and_escapes_model_output(tmp_path):
    run = tmp_path / "run"
    _write_run(run, gold=True, hacking=True)
    out = render_run_report(run)
    text = out.read_text()
    assert out == run / "report.html"
    assert "<script>" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "http://" not in text and "https://" not in text  # nothing fetched when opened offline
    # proxy, gold, KL, objective, β, length, clipfrac, top token ratio + the √KL plot
    assert text.count('src="data:image/png;base64,') == 9
    assert "Over-optimization: reward against √KL" in text
    assert "flagged something at 1 check" in text


def test_report_without_gold_or_hacking_leaves_those_parts_out(tmp_path):
    run = tmp_path / "run"
    _write_run(run)
    text = render_run_report(run).read_text()
    assert "√KL" not in text and "Hacking monitor" not in text
    assert text.count('src="data:image/png;base64,') == 6


def test_load_run_names_the_bad_line(tmp_path):
    run = tmp_path / "run"
    _write_run(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:11: invalid JSON"):
        load_run(run)


def test_a_sample_whose_step_is_not_an_integer_is_named(tmp_path):
    run = tmp_path / "run"
    _write_run(run)
    with open(run / "samples.jsonl", "a") as f:
        f.write('{"step": null, "prompt": "p", "response": "r"}\n')  # used to crash the sort
    with pytest.raises(DataError, match=r"samples.jsonl:3: 'step' must be an integer, got 'None'"):
        load_run(run)


def test_report_cli(tmp_path):
    run = tmp_path / "run"
    _write_run(run)
    r = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "report", str(run)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert (run / "report.html").is_file()
    r = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "metrics.jsonl is missing" in r.stderr and "Traceback" not in r.stderr


def test_the_over_optimization_figure_needs_kl_proxy_and_gold_on_one_update(tmp_path):
    """Gold logged, but never on an update that also logged KL and proxy: no figure (and no
    empty panels that make matplotlib warn about a legend with nothing in it); with points, a
    figure drawn without a warning."""
    import warnings

    from rlhfkit.report.figures import gold_vs_sqrt_kl_figure

    apart = tmp_path / "apart"
    apart.mkdir()
    rows = [{"step": 1, "objective/kl": 0.1, "objective/scores": 0.2},
            {"step": 2, "objective/gold_scores": 0.3}]  # fmt: skip
    (apart / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    together = tmp_path / "together"
    _write_run(together, gold=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gold_vs_sqrt_kl_figure([load_run(apart)]) is None
        uri = gold_vs_sqrt_kl_figure([load_run(apart), load_run(together)])
    assert uri.startswith("data:image/png;base64,")
