"""Run ``rlhfkit ARGS...`` in this process and, at exit, append this process's peak RSS (VmHWM) as
one JSON line to FILE: ``python _rss_probe.py FILE ARGS...``, started by ``torchrun`` once per
process. ``--baseline`` instead of ARGS: only what every run holds before a model (torch,
transformers, accelerate, peft imported; the process group formed)."""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import peak_rss_mb


def main() -> int:
    record, args = Path(sys.argv[1]), sys.argv[2:]

    def write() -> None:
        line = {"rank": int(os.environ.get("RANK", "0")), "peak_rss_mb": round(peak_rss_mb(), 1)}
        with open(record, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    atexit.register(write)
    if args == ["--baseline"]:
        import peft  # noqa: F401
        import transformers  # noqa: F401

        from rlhfkit.runtime.distributed import make_accelerator

        make_accelerator().wait_for_everyone()
        return 0
    from rlhfkit.cli import main as rlhfkit

    return rlhfkit(args)


if __name__ == "__main__":
    raise SystemExit(main())
