"""The README's two quick-start commands must stay true: CI runs the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_test_command() -> str:
    text = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"^TEST_COMMAND='(.+)'$", text, flags=re.M)
    assert m, ".ci/run must define TEST_COMMAND='...'"
    return m.group(1)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert _ci_test_command() in readme.splitlines()


def test_readme_quick_start_has_exactly_two_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    assert all(len(b.strip().splitlines()) == 1 for b in blocks)
    assert "pip install torch==2.13.0" in blocks[0] and "rlhfkit" in blocks[0]
