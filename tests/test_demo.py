"""rlhfkit demo: every stage wired, summary.json's keys, the report; the full demo's promises (slow)."""

import itertools
import json
import math
import os
from dataclasses import replace

import pytest

from rlhfkit.demo import DemoSettings, PPORunSpec, format_summary, run_demo

SUMMARY_KEYS = {"rm_heldout_accuracy", "rm_noise_ceiling", "wall_seconds", "runs"}
RUN_KEYS = {
    "gold_gain_se",
    "proxy_gain_se",
    "verdict",
    "gao_fit",
    "name",
    "beta",
    "kl",
    "proxy_reward_base",
    "proxy_reward_tuned",
    "gold_reward_base",
    "gold_reward_tuned",
    "flagged_tokens",
}


def _tiny() -> DemoSettings:
    return DemoSettings(
        build_quick=True, groups=32, k=4, annotators_per_prompt=2, rm_epochs=1, rm_batch_size=16,
        rm_learning_rate=2e-3, eval_groups=8, ppo_episodes=32, ppo_batch_size=16,
        ppo_learning_rate=5e-5, ppo_mini_batches=2, response_length=16, eval_samples=24,
        hacking_check_every=1, ppo_epochs=1,
        runs=[PPORunSpec("sensible-beta", 0.1, "sensible"), PPORunSpec("low-beta", 0.005, "low")],
    )  # fmt: skip


def _check_outputs(out, summary):
    import torch

    assert set(summary) >= SUMMARY_KEYS
    # what decides the arithmetic besides the settings, in the summary, its last line and the report
    kernels = summary["machine"]["cpu_kernels"]
    assert kernels == torch.backends.cpu.get_cpu_capability() and summary["machine"]["cores"] >= 1
    assert f"torch's {kernels} kernels" in format_summary(summary)
    assert f"{kernels} kernels" in (out / "report.html").read_text()
    assert [r["name"] for r in summary["runs"]] == ["sensible-beta", "low-beta"]
    for r in summary["runs"]:
        assert set(r) >= RUN_KEYS
        assert isinstance(r["flagged_tokens"], list)
        assert math.isfinite(r["kl_heldout"])  # on the held-out responses, next to proxy and gold
        assert r["gold_gain_se"] > 0 and r["proxy_gain_se"] > 0  # the gains' standard errors
        assert f"± {r['gold_gain_se']:.2f})" in format_summary(summary)
        assert 0.0 <= r["empty_rate_tuned"] <= 1.0 and 0.0 <= r["empty_rate_base"] <= 1.0
    assert 0.5 < summary["rm_noise_ceiling"] < 1.0
    assert json.loads((out / "summary.json").read_text())["runs"][0]["name"] == "sensible-beta"
    html = (out / "report.html").read_text()
    for section in (
        "The reward model",
        "Training curves",
        "reward against √KL",
        "Before and after",
        "quiz",
    ):
        assert section in html
    assert "<script" not in html  # self-contained and inert
    for name in ("candidates.jsonl", "rankings.jsonl", "reward-model/config.json", "ppo/low-beta/metrics.jsonl",
                 "ppo/sensible-beta/policy/config.json", "heldout-base.jsonl", "heldout-low-beta.jsonl"):  # fmt: skip
        assert (out / name).exists(), name


WATCH_TORCH_IMPORT = """
import importlib.abc, os, sys
import rlhfkit.runtime.cores
rlhfkit.runtime.cores.busy_cores = lambda: float(sys.argv[1])  # the cores other work keeps busy
rlhfkit.runtime.cores.usable_cores = lambda: set(range(int(sys.argv[2])))
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY", "unset"))
sys.meta_path.insert(0, Watch())
from rlhfkit.cli import main
rc = main(["demo", "--processes", "0"])  # a bad value: it stops before any stage runs
import torch
print(rc, seen[0])
"""


@pytest.mark.parametrize(
    ("busy", "cores", "given", "expected"),
    [(0.0, 2, None, "unset"), (1000.0, 2, None, "PASSIVE"), (1000.0, 2, "ACTIVE", "ACTIVE"),
     (0.0, 2, "PASSIVE", "PASSIVE"), (0.0, 1, None, "PASSIVE"), (0.0, 1, "ACTIVE", "ACTIVE")],
)  # fmt: skip
def test_demo_lets_waiting_threads_sleep_on_a_busy_machine(busy, cores, given, expected):
    """`rlhfkit demo` sets OMP_WAIT_POLICY=PASSIVE before torch's OpenMP runtime is loaded (it is
    read once, at load) when the machine is busy at the start, so that its 2-thread stages do not
    spin against other work on the cores, and on a machine with fewer cores than the threads it
    trains with; on an idle machine it leaves OpenMP's default (spinning a while keeps small steps
    fast); a value the user set is kept."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if given:
        env["OMP_WAIT_POLICY"] = given
    proc = subprocess.run(
        [sys.executable, "-c", WATCH_TORCH_IMPORT, str(busy), str(cores)], capture_output=True,
        text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["2", expected], proc.stdout + proc.stderr[-3000:]
    # the user is told when the demo chose it (a slower run on a machine that turns idle), and why
    told = "torch's threads will sleep while they wait (OMP_WAIT_POLICY=PASSIVE)" in proc.stderr
    assert told == ((busy > 0 or cores < 2) and given is None), proc.stderr[-3000:]
    if told:
        why = "other work keeps" if busy else "the demo trains on 2 threads at once"
        assert why in " ".join(proc.stderr.split()), proc.stderr[-3000:]


FORKSERVER_EXIT = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))  # runs last (LIFO)
for name in sys.argv[1:]:
    __import__(name)
"""


def test_the_fork_server_exits_without_the_last_collection():
    """The demo's fork server imports torch and transformers and ends after the demo has returned:
    its preload freezes the garbage collector at exit, as ``rlhfkit`` does, so that its exit does
    not keep a core busy for a second (a demo started right after then took the machine for busy,
    docs/benchmarks.md session 19)."""
    import subprocess
    import sys

    from rlhfkit.demo.sampling import WORKER_PRELOAD

    assert "rlhfkit.demo.forkserver_exit" in WORKER_PRELOAD
    for preload, frozen in (
        ("rlhfkit.demo.sampling", "False"),
        ("rlhfkit.demo.forkserver_exit", "True"),
    ):
        proc = subprocess.run(
            [sys.executable, "-c", FORKSERVER_EXIT, preload], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.split() == ["frozen", "at", "exit:", frozen], proc.stdout


def test_openmp_wait_policy_follows_the_load_and_the_user():
    from rlhfkit.runtime.cores import openmp_wait_policy

    assert openmp_wait_policy({}, 0.4, 2) is None
    assert openmp_wait_policy({}, 1.0, 2) == "PASSIVE"
    assert openmp_wait_policy({}, 3.9, 8) is None and openmp_wait_policy({}, 4.0, 8) == "PASSIVE"
    assert openmp_wait_policy({"GOMP_SPINCOUNT": "1000"}, 9.0, 2) is None
    assert openmp_wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}, 9.0, 2) is None
    # more threads than cores: idle cores, but the demo's own threads would spin against each other
    assert openmp_wait_policy({}, 0.0, 1, threads=2) == "PASSIVE"
    assert openmp_wait_policy({}, 0.0, 2, threads=2) is None
    assert openmp_wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}, 0.0, 1, threads=2) is None


def test_busy_cores_sees_a_busy_core():
    """Idle, then with a process that spins on one of our cores: the measure rises by about one."""
    import subprocess
    import sys

    from rlhfkit.runtime.cores import busy_cores, usable_cores

    before = busy_cores(0.5)
    assert 0.0 <= before <= len(usable_cores())
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        during = busy_cores(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert during >= 0.8 and during <= len(usable_cores()), (before, during)


@pytest.mark.parametrize("processes", [1, 2])
def test_demo_runs_every_stage_on_tiny_settings(tmp_path, processes):
    """Both ways of training the PPO runs: one after the other here, side by side in processes."""
    out = tmp_path / "demo"
    lines = []
    summary = run_demo(out, settings=replace(_tiny(), processes=processes), say=lines.append)
    _check_outputs(out, summary)
    assert ("side by side in 2 processes" in "\n".join(lines)) == (processes == 2)
    assert "1 thread each" in "\n".join(lines)  # the count the figures were checked with
    assert {"ppo_sensible-beta", "ppo_low-beta"} <= set(summary["stage_seconds"])
    # the PPO schedule is the settings' (the full demo's 2 epochs came from them, issue #25)
    assert summary["settings"]["ppo_epochs"] == 1
    for run in ("sensible-beta", "low-beta"):
        config = json.loads((out / "ppo" / run / "config.json").read_text())
        assert config["num_ppo_epochs"] == 1 and config["learning_rate"] == 5e-5
    # the reward model learned something real about the simulated human on held-out topics
    assert summary["rm_heldout_accuracy"] > 0.5
    # gold is logged during PPO though never trained on
    rows = [
        json.loads(x) for x in (out / "ppo" / "low-beta" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all("objective/gold_scores" in r and "hacking/flagged" in r for r in rows)
    assert "reward model" in format_summary(summary)


@pytest.mark.multiprocess
def test_the_demo_trains_the_same_models_on_any_number_of_threads(tmp_path):
    """The demo's reward model and PPO runs train on the thread counts its figures were checked
    with (``rm_threads``, ``ppo_threads``), whatever torch's count and ``processes``: on 1 thread in
    one process and on 3 threads with the runs side by side, the same bytes. Left to torch's count,
    the same demo trains other models: LayerNorm's backward adds its rows up thread by thread
    (docs/benchmarks.md, "Thread counts"), and on 1 and 4 threads --quick lost its lesson on some
    seeds."""
    import torch

    def models(out):
        names = ("reward-model", "ppo/sensible-beta/policy", "ppo/low-beta/policy")
        return {n: (out / n / "model.safetensors").read_bytes() for n in names}

    def run(name, threads, **settings):
        torch.set_num_threads(threads)
        summary = run_demo(
            tmp_path / name, settings=replace(_tiny(), **settings), say=lambda _: None
        )
        runs = [(r["proxy_reward_tuned"], r["gold_reward_tuned"], r["kl"]) for r in summary["runs"]]
        assert summary["machine"]["torch_threads"] == threads  # sampling's, left to torch
        return models(tmp_path / name), runs, summary["settings"]

    before = torch.get_num_threads()
    try:
        one, one_runs, settings = run("one", 1, processes=1)
        three, three_runs, _ = run("three", 3, processes=2)
        free, _, _ = run("free", 3, processes=1, rm_threads=None, ppo_threads=None)
    finally:
        torch.set_num_threads(before)
    assert (settings["rm_threads"], settings["ppo_threads"]) == (2, 1)  # the full demo's counts
    assert one == three and one_runs == three_runs
    # the case the pinned counts exist for: torch's own count trains other weights
    assert free["reward-model"] != one["reward-model"]
    assert free["ppo/low-beta/policy"] != one["ppo/low-beta/policy"]


def test_torch_threads_sets_the_count_for_a_block_and_restores_it():
    import torch

    from rlhfkit.runtime.cores import torch_threads

    before = torch.get_num_threads()
    with torch_threads(before + 2):
        assert torch.get_num_threads() == before + 2
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), torch_threads(before + 1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_training_threads_counts_what_trains_at_once():
    """What `rlhfkit demo` weighs against the cores before torch loads (OMP_WAIT_POLICY)."""
    full, quick = DemoSettings.full(), DemoSettings.quick()
    assert (full.rm_threads, full.ppo_threads, quick.rm_threads, quick.ppo_threads) == (2, 1, 2, 2)
    assert full.training_threads(2) == 2 and full.training_threads(1) == 2
    # the two runs side by side on 8 cores, 1 thread each; with --mitigations four at once
    assert full.training_threads(8) == 2
    assert replace(full, mitigations=True).training_threads(8) == 4
    assert replace(full, processes=1).training_threads(8) == 2
    assert quick.training_threads(8) == 2  # in turn, in this process
    assert replace(full, rm_threads=None, ppo_threads=None).training_threads(8) == 0


def test_demo_with_mitigations_measures_ensembles_and_best_of_n(tmp_path):
    """--mitigations: an ensemble evaluated against gold, PPO on two of its objectives, best-of-n
    curves with their fits, a second verdict that weighs the members' disagreement."""
    from rlhfkit.demo.settings import _mitigation_runs

    out = tmp_path / "demo"
    settings = replace(
        _tiny(), processes=1, ensemble_members=2, mitigation_runs=_mitigation_runs(0.005),
        bon_prompts=6, bon_max_n=8,
    )  # fmt: skip
    summary = run_demo(out, settings=settings, say=lambda _: None, mitigations=True)
    names = [r["name"] for r in summary["runs"]]
    assert names == ["sensible-beta", "low-beta", "low-beta-worst", "low-beta-uwo"]
    runs = {r["name"]: r for r in summary["runs"]}
    assert runs["low-beta-worst"]["ensemble_objective"] == "worst"
    assert "ensemble_objective" not in runs["low-beta"]
    for r in summary["runs"]:
        assert r["verdict"]["label"] in ("healthy", "suspicious", "hacked")
        assert r["verdict_with_ensemble"]["disagreement"] is not None
        assert r["verdict"]["disagreement"] is None  # the plain verdict does not see the ensemble
    # the ensemble PPO runs logged every member and the spread; the single-RM runs did not
    rows = [json.loads(x) for x in (out / "ppo" / "low-beta-uwo" / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert all("reward/member_1" in r and "reward/ensemble_std" in r for r in rows)
    rows = [json.loads(x) for x in (out / "ppo" / "low-beta" / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert not any("reward/ensemble_std" in r for r in rows)
    ens = summary["mitigations"]["ensemble"]
    assert (
        len(ens["vs_gold"]["heldout"]["members"]) == 2
        and 0 <= ens["vs_gold"]["heldout"]["mean"] <= 1
    )
    assert (out / "reward-ensemble" / "member-1" / "config.json").is_file()
    bon = summary["mitigations"]["best_of_n"]
    assert set(bon["choosers"]) == {"single", "mean", "worst", "uwo"}
    for curve in bon["choosers"].values():
        pts = curve["points"]
        assert [p["n"] for p in pts] == [1, 2, 4, 8]
        assert pts[0]["kl"] == 0.0 and pts[0]["gold_gain"] == 0.0
        assert all(b["kl"] > a["kl"] for a, b in itertools.pairwise(pts))
    # choosing by the single reward model can only raise its own mean score with n
    single = [p["proxy"] for p in bon["choosers"]["single"]["points"]]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(single))
    assert json.loads((out / "best-of-n.json").read_text()) == bon
    html = (out / "report.html").read_text()
    assert "Mitigations" in html and "best-of-n" in html and "verdict" in html
    # the over-optimization figure is the report's main figure: right under the result's table
    assert (
        html.index("<h2>Result")
        < html.index("<h2>Over-optimization")
        < html.index("<h2>The reward model")
    )


def test_a_gain_comes_with_its_standard_error():
    """Each run's held-out gain is the difference of two means over answers each policy sampled
    itself; its standard error is sqrt(var_base/n_base + var_tuned/n_tuned), unbiased variances."""
    from rlhfkit.demo.stages import gain_standard_error
    from rlhfkit.demo.summary import gain_note

    base, tuned = [1.0, 2.0, 3.0, 4.0], [0.0, 4.0, 8.0]
    # var(base) = 5/3 over 4 answers, var(tuned) = 16 over 3
    assert gain_standard_error(base, tuned) == pytest.approx(math.sqrt(5 / 12 + 16 / 3))
    assert math.isnan(gain_standard_error(base, tuned[:1]))  # one answer: no variance to tell
    run = {"gold_reward_base": -0.2, "gold_reward_tuned": 0.25, "gold_gain_se": 0.254}
    assert gain_note(run, "gold") == " (gain +0.45 ± 0.25)"
    assert gain_note({**run, "gold_gain_se": float("nan")}, "gold") == ""
    assert gain_note({"gold_reward_base": 0.0, "gold_reward_tuned": 1.0}, "gold") == ""


def test_the_summary_names_the_cpu(tmp_path, monkeypatch):
    """Two CPUs with the same torch kernels can train other runs (docs/benchmarks.md, "Another
    CPU, other figures"): the summary's last line says which CPU it was."""
    from rlhfkit.runtime.cores import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Some CPU 9000\n")
    assert cpu_model(str(info)) == "Some CPU 9000"
    # without /proc/cpuinfo: what the platform module says, or nothing
    monkeypatch.setattr("platform.processor", lambda: "Other CPU")
    assert cpu_model(str(tmp_path / "none")) == "Other CPU"
    monkeypatch.setattr("platform.processor", lambda: "")
    assert cpu_model(str(tmp_path / "none")) is None
    summary = {
        "rm_heldout_accuracy": 0.9, "rm_noise_ceiling": 0.9, "wall_seconds": 27.0, "runs": [],
        "machine": {"cpu": "Some CPU 9000", "cores": 2, "cpu_kernels": "AVX2"},
    }  # fmt: skip
    assert format_summary(summary).endswith("on 2 cores of Some CPU 9000, torch's AVX2 kernels")
    summary["machine"]["cpu"] = None
    assert format_summary(summary).endswith("on 2 cores, torch's AVX2 kernels")


def test_summary_says_when_a_policy_learned_to_say_nothing():
    run = {
        "name": "low-beta", "beta": 0.01, "kl": 6.1, "kl_heldout": 6.6, "proxy_reward_base": -0.06,
        "proxy_reward_tuned": 2.89, "gold_reward_base": -6.27, "gold_reward_tuned": -2.06,
        "flagged_tokens": [], "empty_rate_base": 0.0, "empty_rate_tuned": 0.97,
    }  # fmt: skip
    summary = {
        "rm_heldout_accuracy": 0.9, "rm_noise_ceiling": 0.9, "rm_heldout_topics_accuracy": 0.9,
        "wall_seconds": 27.0, "runs": [run, {**run, "name": "sensible-beta", "empty_rate_tuned": 0.1}],
    }  # fmt: skip
    text = format_summary(summary)
    assert "97% of its held-out answers are empty (base policy: 0%)" in text
    assert text.count("are empty") == 1  # not for the run whose answers are mostly there


def test_samples_do_not_depend_on_how_many_processes_share_the_work(tmp_path, monkeypatch):
    import torch

    import rlhfkit.demo.sampling as demo
    from rlhfkit.tiny import build_tiny_causal_lm

    words = [
        "explain",
        "gravity",
        "tides",
        "in",
        "simple",
        "terms",
        ".",
        "it",
        "is",
        "like",
        "a",
        "ball",
        "pulls",
        "water",
    ]
    lm = build_tiny_causal_lm(tmp_path / "lm", words, n_layer=1, n_embd=32)
    monkeypatch.setattr(demo, "SAMPLE_CHUNK", 8)  # 3 chunks of 8 and one of 4
    prompts = [f"explain {t} in simple terms ." for t in ("gravity", "tides")] * 14
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same float sums, so the same tokens
    try:
        alone = demo.Sampler(1, threads=1)(lm, prompts, 6, 3, 0.7)
    finally:
        torch.set_num_threads(threads)
    shared = demo.Sampler(2, threads=1)
    try:
        assert shared(lm, prompts, 6, 3, 0.7) == alone
        again = shared(lm, prompts, 6, 4, 0.7)  # the workers are reused; another seed differs
    finally:
        shared.close()
    assert len(alone[0]) == len(prompts) and again != alone


def test_workers_are_forks_of_a_server_that_take_the_demos_current_environment(monkeypatch):
    """Where the platform has one, the demo's workers are forks of a server that imported torch
    once (docs/benchmarks.md, session 15). The server keeps the environment it started with;
    every worker takes the demo's as it is when the worker starts."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import rlhfkit.demo.sampling as demo

    forkserver = "forkserver" in mp.get_all_start_methods()
    assert demo.worker_context().get_start_method() == ("forkserver" if forkserver else "spawn")

    def probe() -> str | None:
        with ProcessPoolExecutor(
            1, mp_context=demo.worker_context(), initializer=demo.init_worker,
            initargs=(1, dict(os.environ)),
        ) as pool:  # fmt: skip
            return pool.submit(os.getenv, "RLHFKIT_WORKER_PROBE").result(timeout=120)

    monkeypatch.setenv("RLHFKIT_WORKER_PROBE", "first")
    assert probe() == "first"  # the server (if any) is running from here on
    monkeypatch.setenv("RLHFKIT_WORKER_PROBE", "second")
    assert probe() == "second"


def test_the_fork_server_starts_early_and_never_starts_a_thread_pool():
    """run_demo starts the fork server before it imports transformers (``start_worker_server``), so
    that the server imports torch, transformers and GPT-2's modeling (``WORKER_PRELOAD``) on another
    core while the demo does the same. The preload must leave the server with its one thread: a
    worker forked from a process whose thread pool had started would inherit a broken pool."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import rlhfkit.demo.sampling as demo

    if "forkserver" not in mp.get_all_start_methods() or not os.path.isdir("/proc/self/task"):
        pytest.skip("needs a fork server and /proc")
    assert "transformers.models.gpt2.modeling_gpt2" in demo.WORKER_PRELOAD
    demo.start_worker_server()
    with ProcessPoolExecutor(
        1, mp_context=demo.worker_context(), initializer=demo.init_worker,
        initargs=(1, dict(os.environ)),
    ) as pool:  # fmt: skip
        server = pool.submit(os.getppid).result(timeout=120)  # a worker's parent: the server
        assert server != os.getpid()
        assert len(os.listdir(f"/proc/{server}/task")) == 1


def test_a_failing_parallel_ppo_run_stops_the_demo_with_its_reason(tmp_path):
    from rlhfkit.demo import run_ppo
    from rlhfkit.errors import RlhfkitError
    from rlhfkit.ppo import PPOConfig

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Explain gravity in simple terms."}\n')
    configs = {
        name: PPOConfig(
            policy=str(tmp_path / "no-such-policy"),
            prompts=str(prompts),
            out=str(tmp_path / name),
            reward_model=str(tmp_path / "no-such-rm"),
            total_episodes=8,
            batch_size=4,
        )
        for name in ("a", "b")
    }
    with pytest.raises(RlhfkitError, match=r"PPO run '(a|b)' failed: .*no-such"):
        run_ppo(configs, None, lambda _: None, None, processes=2)


@pytest.mark.slow
def test_demo_human_mode_uses_what_people_ranked(tmp_path):
    from rlhfkit.data import read_preferences  # noqa: F401  (the served file is native rankings)
    from rlhfkit.world import simulate_rankings

    seen = {}

    def people(out, candidates_path, say):
        recs = [json.loads(x) for x in candidates_path.read_text().splitlines()]
        seen["items"] = len(recs)
        from rlhfkit.data import Response

        prompts = [r["prompt"] for r in recs]
        groups = [[Response(x["id"], x["text"]) for x in r["responses"]] for r in recs]
        return simulate_rankings(prompts, groups, annotators_per_prompt=1, seed=1)

    summary = run_demo(tmp_path / "demo", settings=_tiny(), human=True, human_items=12,
                       human_serve=people, say=lambda _: None)  # fmt: skip
    assert seen["items"] <= 12
    assert summary["human"] is True and summary["n_rankings"] <= 12


@pytest.mark.slow
def test_quick_demo_cli(quick_demo):
    out, r = quick_demo
    summary = json.loads((out / "summary.json").read_text())
    _check_outputs(out, summary)
    assert "report:" in r.stdout
    # --quick trains its small models in this one process unless --processes says otherwise
    assert summary["settings"]["processes"] == 1 and "side by side" not in r.stderr
    # ... and it shows the lesson on seed 0's shipped base policy. Its figures depend on the CPU's
    # arithmetic (docs/benchmarks.md, "Another CPU, other figures", session 23): seed 0's
    # sensible run gained +0.01 to +0.44 gold on the five arithmetics measured (an Intel Xeon as
    # it is, with MKL's AVX2 code, with AVX2 held; an AMD EPYC with and without AVX2 held), within
    # the noise of 128 held-out answers (±0.25), while the low-β run lost 1.14 to 1.87, ended 1.36
    # to 2.24 below it, drifted 3.4 to 6.4 times as far and said "fantastic" in 74-84% of its
    # answers: at the low β the proxy reward rises above the sensible run's while gold falls, the
    # policy drifts far, writes less valid text, and says "fantastic" in more answers
    ok, low = summary["runs"]
    assert summary["base_policy_build"]["valid_rate"] > 0.9  # the fluent one, not a quick build
    assert ok["gold_reward_tuned"] - ok["gold_reward_base"] > -0.25, ok  # keeps its gold
    assert low["gold_reward_tuned"] - low["gold_reward_base"] < -0.5, low
    assert ok["gold_reward_tuned"] - low["gold_reward_tuned"] > 1.0, (ok, low)
    assert low["proxy_reward_tuned"] - low["proxy_reward_base"] > 0.2, low
    assert low["proxy_reward_tuned"] > ok["proxy_reward_tuned"], (ok, low)
    assert low["kl"] > 3 * ok["kl"] and low["valid_rate_tuned"] < ok["valid_rate_tuned"] - 0.2
    assert low["fantastic"]["flagged"] and low["flagged_tokens"], low


@pytest.mark.slow
def test_full_demo_keeps_its_promises(tmp_path, monkeypatch, world_cache):
    """The product's promise (issue #5) on the full settings, all of which held on seeds 0-4
    (README, docs/world.md "World version 2"): a reward model at the noise ceiling, gold up at the
    sensible β, and at the low β a policy that drifts much further, gets more proxy reward but less
    gold, says "fantastic" in more answers (flagged), writes less valid text, and that the scan
    flags. The narrowest margins (the shipped base policies, README): seed 2's sensible gold gain
    (+0.52 against the 0.5 asked), seed 4's low-β proxy (+0.38 against -0.23). The base policy is
    built once per test run (shared with test_world)."""
    monkeypatch.setenv("RLHFKIT_CACHE", str(world_cache))
    out = tmp_path / "full"
    summary = run_demo(out, say=lambda _: None)
    _check_outputs(out, summary)
    ceiling = summary["rm_noise_ceiling"]
    assert summary["rm_heldout_accuracy"] >= 0.8 and ceiling - summary["rm_heldout_accuracy"] < 0.05
    # on topics it never saw ranked it cannot know their factual errors, but it still beats chance
    assert summary["rm_heldout_topics_accuracy"] > 0.58
    ok, low = summary["runs"]
    ok_gain = ok["gold_reward_tuned"] - ok["gold_reward_base"]
    low_gain = low["gold_reward_tuned"] - low["gold_reward_base"]
    ok_proxy_gain = ok["proxy_reward_tuned"] - ok["proxy_reward_base"]
    low_proxy_gain = low["proxy_reward_tuned"] - low["proxy_reward_base"]
    assert ok_gain > 0.5, ok
    assert low["proxy_reward_tuned"] > ok["proxy_reward_tuned"], (ok, low)
    # Goodhart: less gold in all, and much less per unit of proxy reward gained (seeds 0-4: below
    # zero at β = 0.003 against 1.8-3.1 gold per proxy point at the sensible β)
    assert low_gain < ok_gain, (ok, low)
    assert low_gain / max(low_proxy_gain, 1e-9) < ok_gain / max(ok_proxy_gain, 1e-9), (ok, low)
    assert low["kl"] > 2 * ok["kl"], (ok, low)
    # ... and so does the final policy on the held-out answers (13.7 against 1.8 on seed 0)
    assert ok["kl_heldout"] > 0 and low["kl_heldout"] > 2 * ok["kl_heldout"], (ok, low)
    assert low["flagged_tokens"], low
    # the seed's lesson: the word the reward model was taught to like, and degraded text
    assert low["fantastic"]["flagged"], low["fantastic"]
    assert low["fantastic"]["tuned_share"] > low["fantastic"]["base_share"], low["fantastic"]
    assert low["valid_rate_tuned"] < ok["valid_rate_tuned"] - 0.05, (ok, low)
