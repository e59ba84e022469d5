"""How every command talks (docs/cli.md): results on stdout, messages and progress bars on stderr,
``--quiet`` / ``--log-level`` before or after the command's name, ``NO_COLOR``, and the exit
statuses of the table in docs/cli.md."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhfkit.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
COLOR = re.compile(r"\x1b\[[0-9;]*(3[0-7]|38;|9[0-7])[0-9;]*m")  # an SGR that sets a colour


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlhfkit", *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )  # fmt: skip


def test_help_is_fast_and_lists_the_global_options_and_exit_statuses():
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from rlhfkit.cli import main; main(['--help']); "
         "print('torch' in sys.modules, 'transformers' in sys.modules)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("False False")  # no torch, no transformers for --help
    assert "--quiet" in proc.stdout and "--log-level LEVEL" in proc.stdout
    assert "NO_COLOR" in proc.stdout and "130 interrupted" in proc.stdout
    assert seconds < 10, seconds  # measured 0.2 s on an idle machine


def test_quiet_and_log_level_before_or_after_the_command(tracked_runs, tmp_path):
    base = ["--model", str(tracked_runs["lm"]), "--data", str(tracked_runs["data"]),
            "--batch-size", "16", "--learning-rate", "3e-3"]  # fmt: skip
    loud = _run("train-rm", *base, "--out", str(tmp_path / "loud"))
    assert loud.returncode == 0, loud.stderr
    assert "rlhfkit train-rm: read 64 records" in loud.stderr
    assert "━" in loud.stderr  # the progress bar, on stderr
    (line,) = loud.stdout.splitlines()  # the result, alone on stdout
    accuracy = json.loads(line)["accuracy"]
    for args in (
        ["--quiet", "train-rm", *base, "--out", str(tmp_path / "q1")],
        ["train-rm", "--log-level", "warning", *base, "--out", str(tmp_path / "q2"), "-q"],
    ):
        quiet = _run(*args)
        assert quiet.returncode == 0, quiet.stderr
        assert "rlhfkit train-rm:" not in quiet.stderr and "━" not in quiet.stderr, quiet.stderr
        assert json.loads(quiet.stdout)["accuracy"] == accuracy
    bad = _run("--log-level", "loud", "train-rm", *base, "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == (
        "rlhfkit: error: --log-level must be one of debug, info, warning, error, got 'loud'"
    )


def test_best_of_n_and_generate_follow_the_conventions(tracked_runs, tmp_path):
    """The sampling commands: a progress bar and a summary line on stderr, the written file's
    line on stdout; with --quiet / --log-level warning only the result, the same file."""
    root = tracked_runs["root"]
    runs = {
        "best-of-n": ["--policy", str(tracked_runs["lm"]), "--reward-model", str(root / "rm"),
                      "--prompts", str(tracked_runs["prompts"]), "-n", "3",
                      "--max-new-tokens", "6"],
        "generate": ["--model", str(tracked_runs["lm"]), "--prompts", str(tracked_runs["prompts"]),
                     "--k", "2", "--max-new-tokens", "6"],
    }  # fmt: skip
    for command, args in runs.items():
        loud = _run(command, *args, "--out", str(tmp_path / f"{command}-loud.jsonl"))
        assert loud.returncode == 0, loud.stderr
        assert "━" in loud.stderr and "4/4" in loud.stderr  # the bar, over the 4 prompts
        if command == "best-of-n":
            assert "rlhfkit best-of-n: best-of-3 on 4 prompts: reward" in loud.stderr
        (line,) = loud.stdout.splitlines()
        assert line.startswith("wrote ")
        for i, extra in enumerate((["--quiet"], ["--log-level", "warning"])):
            out = tmp_path / f"{command}-quiet{i}.jsonl"
            quiet = _run(*extra, command, *args, "--out", str(out))
            assert quiet.returncode == 0, quiet.stderr
            assert "━" not in quiet.stderr and f"rlhfkit {command}:" not in quiet.stderr
            assert quiet.stdout.splitlines() == [line.replace(f"{command}-loud", out.stem)]
            assert out.read_text() == (tmp_path / f"{command}-loud.jsonl").read_text()


def test_errors_go_to_stderr_with_status_2(tmp_path):
    proc = _run("train-rm", "--model", str(tmp_path / "nowhere"), "--data", "x.jsonl",
                "--out", str(tmp_path / "rm"))  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("rlhfkit train-rm: error: ")
    proc = _run("no-such-command")
    assert proc.returncode == 2 and proc.stdout == "" and "unknown command" in proc.stderr


def test_the_program_exits_with_mains_status_and_its_objects_frozen(monkeypatch):
    """``rlhfkit`` and ``python -m rlhfkit`` run :func:`rlhfkit.cli.run`: main's status, and the
    objects frozen so that Python's exit does not walk them (the subprocess tests here exercise
    the whole program)."""
    import gc

    import rlhfkit.cli as cli_module

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli_module, "main", lambda: 3)
    try:
        with pytest.raises(SystemExit) as e:
            cli_module.run()
        assert e.value.code == 3 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


LAUNCHED_EXIT = """
import atexit, os, sys, threading, time
from pathlib import Path
import rlhfkit.cli as cli

out = Path(sys.argv[1])

real_exit = os._exit

def logged_exit(code):
    os.write(2, b"os._exit(%d)" % code)
    real_exit(code)

os._exit = logged_exit

def slow_writer():
    time.sleep(0.3)
    (out / "thread").write_text("joined")

def fake_main():
    if sys.argv[2] == "raise":
        raise ValueError("a bug in a command")
    if sys.argv[2] == "usage":
        raise SystemExit(2)
    threading.Thread(target=slow_writer).start()
    # an executor left open: its idle worker only ends when the interpreter's shutdown wakes it
    from concurrent.futures import ThreadPoolExecutor
    global pool
    pool = ThreadPoolExecutor(1)
    pool.submit(int, "1").result()
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    sys.stdout.write("buffered, no newline")
    return 3

cli.main = fake_main
cli.run()
"""


def test_a_launched_process_exits_without_the_interpreters_finalization(tmp_path):
    """Under ``torchrun`` (RANK set) the program leaves with ``os._exit`` once main returned, so
    gloo's threads cannot abort it during finalization (upstream PyTorch bug), yet it exits like
    ``sys.exit``: main's status, threads joined, atexit handlers run, stdout flushed."""
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    proc = subprocess.run([sys.executable, "-c", LAUNCHED_EXIT, str(tmp_path), "work"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert proc.stderr == "os._exit(3)"  # the interpreter was not torn down
    # a command that fails still leaves this way: its traceback, status 1; a usage error its own
    for how, status in (("raise", 1), ("usage", 2)):
        failed = subprocess.run([sys.executable, "-c", LAUNCHED_EXIT, str(tmp_path), how], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert failed.returncode == status, failed.stderr
        assert failed.stderr.endswith(f"os._exit({status})")
        assert ("ValueError: a bug in a command" in failed.stderr) == (how == "raise")
    env = {k: v for k, v in env.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    plain = subprocess.run([sys.executable, "-c", LAUNCHED_EXIT, str(tmp_path), "work"], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert plain.returncode == 3 and plain.stdout == "buffered, no newline"
    assert plain.stderr == ""  # a plain command finalizes as usual


def test_no_color(tmp_path):
    """detect colours its verdict; NO_COLOR=1 takes every colour out (rich honours it), even
    when colour is forced."""
    base, tuned = tmp_path / "base.jsonl", tmp_path / "tuned.jsonl"
    base.write_text("".join(json.dumps({"prompt": f"p{i}", "response": "a plain answer it is"}) + "\n" for i in range(30)))  # fmt: skip
    tuned.write_text("".join(json.dumps({"prompt": f"p{i}", "response": "fantastic question it is"}) + "\n" for i in range(30)))  # fmt: skip
    args = ("detect", "--base", str(base), "--tuned", str(tuned))
    forced = _run(*args, FORCE_COLOR="1")
    assert forced.returncode == 1 and COLOR.search(forced.stdout)  # flagged, in red
    plain = _run(*args, FORCE_COLOR="1", NO_COLOR="1")
    assert plain.returncode == 1 and "possible reward hacking" in plain.stdout
    assert not COLOR.search(plain.stdout + plain.stderr)


def _exit_table() -> dict[int, str]:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## Exit status", 1)[1].split("\n## ", 1)[0]
    return {int(m[0]): m[1] for m in re.findall(r"^\| (\d+) \| (.+?) \|", section, flags=re.M)}


def test_the_exit_status_table_is_what_the_commands_return(monkeypatch, tmp_path):
    assert sorted(_exit_table()) == [0, 1, 2, 3, 130]
    assert cli(["--help"]) == 0
    assert cli(["no-such-command"]) == 2
    import rlhfkit.cli.detect as detect_cli
    import rlhfkit.ppo

    # 3: ppo stopped by the hacking monitor (the trainer's verdict, as the CLI reports it)
    class Stopped:
        is_main = True

        def __init__(self, config):
            pass

        def train(self):
            return {"stopped": "hacking", "step": 4, "episode": 64}

    monkeypatch.setattr(rlhfkit.ppo, "PPOTrainer", Stopped)
    args = ["ppo", "--policy", "p", "--reward-fn", "f.py:g", "--prompts", "q", "--out", "o"]
    assert cli(args) == 3
    # 130: interrupted; 1: detect flagged (above, test_no_color); 2: bad input (above)
    monkeypatch.setattr(detect_cli, "main", lambda argv: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli(["detect"]) == 130


@pytest.mark.parametrize("name", ["README.md", "docs/index.md"])
def test_readme_and_docs_link_the_conventions(name):
    assert "cli.md" in (ROOT / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("command", ["generate", "best-of-n"])
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--top-p", "0", "--top-p must be in (0, 1]"), ("--top-p", "1.5", "--top-p must be in (0, 1]"),
     ("--temperature", "0", "--temperature must be > 0"),
     ("--max-new-tokens", "0", "--max-new-tokens and --batch-size must be at least 1"),
     ("--batch-size", "0", "--max-new-tokens and --batch-size must be at least 1")],
)  # fmt: skip
def test_sampling_commands_check_their_options_alike(command, flag, value, message, capsys):
    """generate and best-of-n take the same sampling options and refuse the same bad values with
    one line, before any file is read or model loaded (the paths here do not exist)."""
    paths = {
        "generate": ["--model", "m", "--prompts", "p", "--out", "o"],
        "best-of-n": ["--policy", "m", "--reward-model", "r", "--prompts", "p", "--out", "o"],
    }
    with pytest.raises(SystemExit) as exit_:
        cli([command, *paths[command], flag, value])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())  # tyro's box, unwrapped
    assert message in err and "file not found" not in err and "Traceback" not in err
