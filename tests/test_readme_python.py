"""README.md's Python example runs as printed: the block under "## The Python API" is extracted
and executed in an empty directory, and every ``rlhfkit.NAME`` it uses is a top-level name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    section = README.read_text(encoding="utf-8").split("\n## The Python API\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def test_the_example_is_short_and_uses_top_level_names():
    block = _example()
    assert 15 <= len(block.strip().splitlines()) <= 25
    import rlhfkit

    used = set(re.findall(r"\brlhfkit\.(\w+)", block))
    assert used <= set(rlhfkit.__all__), used - set(rlhfkit.__all__)
    assert {"RewardConfig", "train_reward_model", "PPOConfig", "PPOTrainer"} <= used
    for name in used:  # each resolves (lazily) to the real object
        assert getattr(rlhfkit, name).__name__ == name


def test_import_rlhfkit_stays_light():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, rlhfkit; print(sorted({'torch', 'transformers'} & set(sys.modules)))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    """The exact block, in a fresh interpreter (the world's quick base policy is built once in
    the user's cache, as `rlhfkit demo --quick` builds it)."""
    script = tmp_path / "example.py"
    script.write_text(_example(), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = re.search(r"^held-out accuracy: ([0-9.]+)$", proc.stdout, flags=re.M)
    assert accuracy and float(accuracy.group(1)) > 0.5, proc.stdout  # better than chance
    assert re.search(r"^KL -?[0-9.]+, reward [+-][0-9.]+$", proc.stdout, flags=re.M), proc.stdout
    assert (tmp_path / "rankings.jsonl").read_text().strip()
    assert (tmp_path / "rm" / "README.md").is_file() and (tmp_path / "rm" / "eval.json").is_file()
    assert (tmp_path / "run" / "policy" / "README.md").is_file()
    assert (tmp_path / "run" / "policy" / "model.safetensors").is_file()
