"""The documentation site builds with ``mkdocs build --strict`` (Material, the API reference from
the docstrings by mkdocstrings), and --strict does catch a broken link and a missing reference."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build(root: Path, out: Path) -> subprocess.CompletedProcess:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    return subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(out)], cwd=root,
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_COLOR": "1"},
    )  # fmt: skip


def test_docs_site_builds_strict(tmp_path):
    proc = _build(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    site = tmp_path / "site"
    # every page of docs/ is in the site, and the API reference rendered real docstrings
    for page in ROOT.joinpath("docs").rglob("*.md"):
        rel = page.relative_to(ROOT / "docs").with_suffix("")
        if rel.name == "index":
            built = site / rel.parent / "index.html"
        else:
            built = site / rel / "index.html"
        assert built.is_file(), f"{page} was not built"
    ppo = (site / "reference" / "ppo" / "index.html").read_text(encoding="utf-8")
    assert "rlhfkit.ppo.PPOTrainer" in ppo and "Tune a causal LM with PPO" in ppo
    # the modules #24 added: ensembles, best-of-n, the over-optimization fits and the verdict
    for page, name in (
        ("reward", "rlhfkit.reward.ensemble.RewardEnsemble"),
        ("collect", "rlhfkit.collect.best_of_n.best_of_n"),
        ("hacking", "rlhfkit.hacking.overoptimization.kl_best_of_n"),
        ("hacking", "rlhfkit.hacking.verdict.judge"),
    ):
        html = (site / "reference" / page / "index.html").read_text(encoding="utf-8")
        assert f'id="{name}"' in html, (page, name)
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "train_reward_model" in home  # the README's Python example, included


def test_strict_build_fails_on_a_broken_link_or_reference(tmp_path):
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "src", tmp_path / "src")
    page = tmp_path / "docs" / "cli.md"
    original = page.read_text(encoding="utf-8")
    page.write_text(original + "\nSee [the missing page](nowhere.md).\n", encoding="utf-8")
    proc = _build(tmp_path, tmp_path / "site1")
    assert proc.returncode != 0 and "nowhere.md" in proc.stderr
    page.write_text(original + "\n::: rlhfkit.no_such_module\n", encoding="utf-8")
    proc = _build(tmp_path, tmp_path / "site2")
    assert proc.returncode != 0 and "no_such_module" in proc.stderr
