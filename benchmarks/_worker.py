"""One measurement in a fresh process: ``python _worker.py JOB SIDE SPEC.json RESULT.json``.

A fresh process per measurement keeps peak RSS fair (nothing left over from another run) and
stops one run from warming caches or the allocator for the next.
"""

from __future__ import annotations

import json
import os
import sys
import warnings


def main(argv: list[str]) -> int:
    job, side, spec_path, result_path = argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    if job == "rm":
        import _rm

        result = _rm.run(side, spec)
    elif job == "ppo":
        import _ppo

        result = _ppo.run(side, spec)
    elif job == "initial_eval":
        import _ppo

        result = _ppo.initial_eval(spec)
    elif job == "matmul":
        import _machine

        result = _machine.matmul_peak()
    elif job == "profile":
        import _profile

        result = _profile.profile_ours(spec) if side == "ours" else _profile.profile_trl(spec)
    else:
        raise SystemExit(f"unknown job {job!r}")
    tmp = result_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
