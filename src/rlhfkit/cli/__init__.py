"""The ``rlhfkit`` command.

Each subcommand lives in its own module ``rlhfkit.cli.<name>`` exposing ``main(argv) -> int``; it is
imported only when used, so ``rlhfkit --help`` stays fast (no torch import).
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import traceback
from typing import NoReturn

from rlhfkit import __version__
from rlhfkit.errors import RlhfkitError

# command name -> (module under rlhfkit.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the whole pipeline on the built-in world and write a report"),
    "generate": ("generate", "sample K candidate responses per prompt from a causal LM"),
    "annotate": ("annotate", "the ranking web app: import, add-annotator, serve, export, stats"),
    "data": ("data", "preference data: convert between formats, stats"),
    "train-rm": ("train_rm", "train a reward model on rankings or pairs (Bradley-Terry)"),
    "score": ("score", "score responses with a reward model"),
    "ppo": ("ppo", "tune a policy with PPO against a reward model or reward function"),
    "best-of-n": ("best_of_n", "keep the best of n sampled responses per prompt by a reward model"),
    "detect": ("detect", "compare tuned vs base outputs and flag reward hacking"),
    "report": ("report", "render report.html for a PPO run directory"),
    "world": ("world", "the synthetic demo world: build the base policy"),
    "plan": ("plan", "predict memory per device of a ppo or train-rm run (before renting GPUs)"),
}


GLOBAL_OPTIONS = """options of every command (before or after the command's name):
  -q, --quiet         no progress bars or informational lines: warnings, errors and results only
  --log-level LEVEL   debug, info (the default), warning or error

Results go to stdout; messages, progress bars and errors to stderr. NO_COLOR=1 turns colour off.
Exit status: 0 done, 1 detect found possible reward hacking, 2 bad input or options, 3 ppo stopped
by the hacking monitor, 130 interrupted (docs/cli.md)."""


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [
        f"rlhfkit {__version__} — RLHF: rankings → reward model → PPO → hacking detection",
        "",
        "usage: rlhfkit [--quiet] [--log-level LEVEL] COMMAND [options]     rlhfkit --version",
        "       (rlhfkit COMMAND --help for a command's options)",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join([*lines, "", GLOBAL_OPTIONS])


def _global_options(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    """Take ``--quiet``/``-q`` and ``--log-level LEVEL`` out of ``argv`` wherever they stand
    (up to a ``--``): ``(level, quiet, the rest)``."""
    level: str | None = None
    quiet = False
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in ("-q", "--quiet"):
            quiet = True
        elif arg == "--log-level":
            if i + 1 >= len(argv):
                raise RlhfkitError("--log-level needs a value: debug, info, warning or error")
            level, i = argv[i + 1], i + 1
        elif arg.startswith("--log-level="):
            level = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return level, quiet, rest


def main(argv: list[str] | None = None) -> int:
    from rlhfkit.runtime.logs import configure

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        level, quiet, argv = _global_options(argv)
        configure(level, quiet)
    except RlhfkitError as e:
        print(f"rlhfkit: error: {e}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"rlhfkit {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlhfkit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"rlhfkit.cli.{COMMANDS[name][0]}")
    try:
        return int(module.main(rest) or 0)
    except RlhfkitError as e:
        print(f"rlhfkit {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlhfkit {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        from rlhfkit.runtime.distributed import end_process_group

        end_process_group()


def run() -> NoReturn:
    """The ``rlhfkit`` program (``python -m rlhfkit`` too): :func:`main`, then the process exits.

    By then every file is written and closed. At exit Python's cycle collector would walk every
    object that torch and transformers made at import (about a second on a 2-core CPU, for each
    command); :func:`gc.freeze` spares that walk. Objects are still freed by reference counting
    and ``atexit`` handlers still run; only cycles among the frozen objects are left to the
    operating system. Not done by :func:`main`, which tests and scripts call in their own
    process. A process that ``torchrun`` or ``accelerate launch`` started skips the interpreter's
    finalization altogether (:func:`rlhfkit.runtime.distributed.exit_without_finalizing`): gloo's
    threads outlive the process group and could abort the process while it finalizes."""
    from rlhfkit.runtime.distributed import exit_without_finalizing, launched_by_a_launcher

    if not launched_by_a_launcher():
        code = main()
        gc.freeze()
        sys.exit(code)
    # launched: a failure too leaves this way, with its traceback and status 1 (not an abort's -6)
    try:
        code = main()
    except SystemExit as e:  # argparse's usage errors and --help inside a command
        code = _exit_status(e)
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_without_finalizing(code)


def _exit_status(e: SystemExit) -> int:
    """The status Python would exit with for ``e`` (a message goes to stderr, status 1)."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1
