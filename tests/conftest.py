import os

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Workers share the cores: OpenMP threads that spin while they wait for work take CPU time from
# the other worker's (docs/benchmarks.md, "The busy machine"). Passive waiting changes no result.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import itertools

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--fast",
        action="store_true",
        default=False,
        help="skip tests marked slow, browser or multiprocess (CI runs them all)",
    )


# The session fixtures that take a minute or more to build. Under pytest-xdist (the default run:
# `-n auto` in pyproject.toml) each worker builds the session fixtures its tests ask for; every
# test that uses one of these is marked to go to one worker (``--dist loadgroup``), so that each is
# built once per run. Tests that share two of them put both in one group. The cheap session
# fixtures (the tiny models, a few seconds) are not grouped: a group runs as one unit on one worker,
# and a hundred tests tied together would unbalance the workers more than a rebuild costs.
# Two conditions for the marks to take effect: this file's hook runs before xdist's (tryfirst),
# which reads them, and pytest < 9.2 (pyproject.toml): pytest-xdist 3.8 groups a test by renaming
# it through ``item._nodeid``, which pytest 9.2 no longer reads.
EXPENSIVE_FIXTURES = ("quick_demo", "tracked_runs")

# The heaviest tests start first (longest first keeps the workers' finishing times close).
HEAVY_MARKERS = ("slow", "multiprocess")


def _fixture_groups(items) -> dict:
    """item -> group name: the connected components of "a test uses these expensive fixtures"."""
    parent = {f: f for f in EXPENSIVE_FIXTURES}

    def find(f):
        while parent[f] != f:
            f = parent[f]
        return f

    used = {}
    for item in items:
        names = [f for f in EXPENSIVE_FIXTURES if f in getattr(item, "fixturenames", ())]
        for a, b in itertools.pairwise(names):
            parent[find(b)] = find(a)
        if names:
            used[item] = names[0]
    return {item: find(f) for item, f in used.items()}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks
def pytest_collection_modifyitems(config, items):
    for item, group in _fixture_groups(items).items():
        item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike
        items.sort(key=lambda item: not any(m in item.keywords for m in HEAVY_MARKERS))
    if not config.getoption("--fast"):
        return
    skip = pytest.mark.skip(reason="skipped with --fast")
    for item in items:
        if any(m in item.keywords for m in ("slow", "browser", "multiprocess")):
            item.add_marker(skip)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core this process may use, at most 4 (each worker holds its own
    models and fixtures; more would mostly add memory). ``-n 0`` runs in one process."""
    from rlhfkit.runtime.cores import usable_cores

    return max(1, min(len(usable_cores()), 4))


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


# ---------------------------------------------------------------------------------------------
# Tiny word-level language models shared by the test modules (built once per test run)
# ---------------------------------------------------------------------------------------------

TINY_WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "mat",
    "hill",
    "big",
    "small",
    "red",
    "blue",
    "good",
    "bad",
    "and",
    "then",
    "it",
    "was",
    "very",
]
"""The words the shared tiny models speak ("good" is what the reward functions of the tests pay
for)."""
TINY_TOPICS = ["cats", "dogs", "hills", "mats", "colors"]
"""The topics of the prompts ``tell me about {topic} :``."""


@pytest.fixture(scope="session")
def tiny_words():
    """The vocabulary of the shared tiny models (without the prompt words), as a fresh list."""
    return list(TINY_WORDS)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """``tiny_lm(n_layer=1, n_embd=16, **kw)``: a random-weight word-level GPT-2 over
    :data:`TINY_WORDS`, the topics and ``tell me about :`` (pad != EOS), saved once per size per
    test run; returns its directory. Tests must not write into it."""
    from rlhfkit.tiny import build_tiny_causal_lm

    built = {}

    def make(n_layer: int = 1, n_embd: int = 16, **kw):
        key = (n_layer, n_embd, tuple(sorted(kw.items())))
        if key not in built:
            built[key] = build_tiny_causal_lm(
                tmp_path_factory.mktemp("tiny-lm") / "lm",
                [*TINY_WORDS, *TINY_TOPICS, "tell", "me", "about", ":"],
                n_layer=n_layer, n_embd=n_embd, **kw,
            )  # fmt: skip
        return built[key]

    return make


@pytest.fixture(scope="session")
def tell_me_about_lm(tiny_lm, tmp_path_factory):
    """A tiny GPT-2 (2 layers × 32) pretrained for 80 steps to answer ``tell me about X :`` with
    3-7 words of :data:`TINY_WORDS` and EOS, so that it emits words and stops like a real base
    model; with the prompts file and a reward function that pays for each "good". Returns
    ``{"policy", "prompts", "reward"}`` (paths as strings; read-only)."""
    import random
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("tell-me-about")
    path = root / "lm"
    shutil.copytree(tiny_lm(n_layer=2, n_embd=32, n_positions=64), path)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    rng = random.Random(0)
    torch.manual_seed(0)
    word_ids = tok.convert_tokens_to_ids(TINY_WORDS)
    prompt_ids = [tok(f"tell me about {t} :")["input_ids"] for t in TINY_TOPICS]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        seqs = [
            rng.choice(prompt_ids)
            + [rng.choice(word_ids) for _ in range(rng.randint(3, 7))]
            + [tok.eos_token_id]
            for _ in range(64)
        ]
        width = max(map(len, seqs))
        ids = torch.full((64, width), tok.pad_token_id)  # (B, T), right-padded
        labels = torch.full((64, width), -100)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = labels[i, : len(s)] = torch.tensor(s)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    prompts, reward = write_tell_me_about_task(root, TINY_TOPICS)
    return {"policy": str(path), "prompts": prompts, "reward": reward}


def write_tell_me_about_task(root, topics):
    """Write ``root/prompts.jsonl`` (``tell me about {topic} :`` per topic) and ``root/reward.py``
    (``good``: one point per "good" in the response); returns the prompts path and the
    ``--reward-fn`` spec, as strings."""
    import json

    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"tell me about {t} :"}) + "\n" for t in topics)
    )
    reward = root / "reward.py"
    reward.write_text(
        "def good(prompts, responses):\n"
        "    return [float(r.split().count('good')) for r in responses]\n"
    )
    return str(prompts), f"{reward}:good"


@pytest.fixture(scope="session")
def tell_me_about_task():
    """:func:`write_tell_me_about_task`, for test modules (``tell_me_about_task(root, topics)``)."""
    return write_tell_me_about_task
