"""Imported only by the demo's fork server (:data:`rlhfkit.demo.sampling.WORKER_PRELOAD`): its
exit skips the cycle collector's last walk, as ``rlhfkit`` itself does (:func:`rlhfkit.cli.run`).

The server ends after the demo has returned (it stops when it sees its parent gone), and that walk
over the torch and transformers objects it imported kept a core busy for about a second more: long
enough for a demo started right after to find the machine busy and let torch's threads sleep while
they wait (:func:`rlhfkit.runtime.cores.openmp_wait_policy`): ``--quick`` then took 42-51 s
instead of about 30 (docs/benchmarks.md, "Seeds 0–4 ship, and the demo after a demo"). Objects are still
freed by reference counting, and ``atexit`` handlers still run."""

from __future__ import annotations

import atexit
import gc

atexit.register(gc.freeze)
