"""docs/tutorial.md's python blocks run, in order, in one namespace: the tutorial cannot rot."""

import re
import shutil
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(encoding="utf-8"), flags=re.S)


def test_tutorial_has_code_for_every_exercise():
    text = TUTORIAL.read_text(encoding="utf-8")
    for n in (1, 2, 3, 4):
        assert f"## Exercise {n}" in text
    assert len(_blocks()) >= 6


@pytest.mark.slow
def test_tutorial_blocks_run(tmp_path, monkeypatch, quick_demo):
    text = TUTORIAL.read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    # Exercise 4 and the quiz read the outputs of the demo's two policies: the tutorial's
    # `rlhfkit demo --quick --out demo-out`, run once per test session (conftest.quick_demo; a
    # fixture argument, so that the test goes to the worker that has it).
    assert "demo-out" in text
    shutil.copytree(quick_demo[0], tmp_path / "demo-out")
    namespace: dict = {"__name__": "__tutorial__"}
    for i, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"tutorial block {i + 1}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message is what matters
            raise AssertionError(f"tutorial block {i + 1} failed: {e!r}\n{block}") from e
