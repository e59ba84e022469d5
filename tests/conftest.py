import os

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--fast",
        action="store_true",
        default=False,
        help="skip tests marked slow, browser or multiprocess (CI runs them all)",
    )


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--fast"):
        return
    skip = pytest.mark.skip(reason="skipped with --fast")
    for item in items:
        if any(m in item.keywords for m in ("slow", "browser", "multiprocess")):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures(
    "one_thread")``): the 2-core CI machine runs other work at once, and 2 threads per process
    oversubscribe it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory):
    """A cache directory for the full demo world's base policy, shared by the slow tests that need
    it, so the build (a couple of minutes) happens once per test run and never touches ~/.cache."""
    return tmp_path_factory.mktemp("world-cache")


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``rlhfkit demo --quick`` run once from the command line (~1 min), shared by the test of the
    command and the tutorial's blocks that read the demo's outputs. Returns the output directory
    and the finished process; tests copy the directory before writing into it."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("quick-demo") / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="session")
def world_topics():
    """The demo world's topics (statements of every kind), handy realistic text for tests."""
    from rlhfkit.world.content import TOPICS

    return list(TOPICS.values())


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A tiny random-weight model of every family in ``rlhfkit.tiny.ARCHITECTURES`` (each with its
    family-style tokenizer: pad token or not, chat template, stop tokens), built once per run,
    plus ``"bert"``: the packaged all-MiniLM-L6-v2 encoder."""
    from rlhfkit.models import minilm_path
    from rlhfkit.tiny import ARCHITECTURES, build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    models = {arch: build_tiny_model(arch, root / arch) for arch in ARCHITECTURES}
    models["bert"] = minilm_path()
    return models
