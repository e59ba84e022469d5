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
        # with TensorBoard too: test_trackers reads every run of the demo back
        [sys.executable, "-m", "rlhfkit", "demo", "--quick", "--out", str(out),
         "--report-to", "tensorboard"],
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


@pytest.fixture(scope="session")
def tracked_runs(tmp_path_factory):
    """``rlhfkit train-rm`` and then ``rlhfkit ppo`` against that reward model, a few seconds each,
    both with ``--report-to tensorboard wandb trackio mlflow`` (all offline: W&B's offline mode,
    trackio's and MLflow's local stores in the test's directory) and PPO with the hacking monitor
    and a gold reward. Shared by the tracker and model-card tests; returns their paths and the
    finished processes."""
    import json
    import random
    import subprocess
    import sys

    from rlhfkit.tiny import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("tracked")
    fill = ["the", "a", "cat", "dog", "sat", "on", "mat", "and", "it", "was", "very", "of"]
    topics = ["apples", "rivers", "clouds", "trains"]
    lm = build_tiny_causal_lm(root / "lm", [*fill, *topics, "great", "tell", "me", "about", ":"])
    rng = random.Random(0)
    rankings = []
    for _ in range(64):
        texts = [
            " ".join(rng.sample(fill, 4) + ["great"] * n) for n in rng.sample(range(4), 4)
        ]  # four different qualities: how many times "great"
        order = sorted(range(4), key=lambda i: -texts[i].count("great"))
        rankings.append({
            "prompt": f"tell me about {rng.choice(topics)} :",
            "responses": [{"id": str(i), "text": t} for i, t in enumerate(texts)],
            "ranking": [str(i) for i in order],
        })  # fmt: skip
    data = root / "rankings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rankings))
    prompts = root / "prompts.txt"
    prompts.write_text("".join(f"tell me about {t} :\n" for t in topics))
    gold = root / "gold.py"
    gold.write_text(
        "def gold(prompts, responses):\n    return [-len(r.split()) for r in responses]\n"
    )
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
        "WANDB_DIR": str(root / "wandb"), "WANDB_SILENT": "true",
        "TRACKIO_DIR": str(root / "trackio"), "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }  # fmt: skip
    (root / "wandb").mkdir()
    trackers = ["--report-to", "tensorboard", "wandb", "trackio", "mlflow"]
    rlhfkit = [sys.executable, "-m", "rlhfkit"]
    rm = subprocess.run(
        [*rlhfkit, "train-rm", "--model", str(lm), "--data", str(data), "--out", str(root / "rm"),
         "--eval-split", "0.25", "--batch-size", "8", "--learning-rate", "3e-3",
         "--logging-steps", "2", *trackers],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert rm.returncode == 0, rm.stderr[-3000:]
    ppo = subprocess.run(
        [*rlhfkit, "ppo", "--policy", str(lm), "--reward-model", str(root / "rm"),
         "--prompts", str(prompts), "--out", str(root / "ppo"), "--total-episodes", "64",
         "--batch-size", "16", "--response-length", "8", "--kl-coef", "0.1",
         "--gold-reward-fn", f"{gold}:gold", "--hacking-check-every", "2",
         "--hacking-num-prompts", "16", "--run-name", "tiny-ppo", *trackers],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert ppo.returncode == 0, ppo.stderr[-3000:]
    return {"root": root, "lm": lm, "data": data, "prompts": prompts, "rm": rm, "ppo": ppo}
