"""Starting Accelerate the same way under every launcher, CPU included.

``torchrun`` and ``accelerate launch --multi_gpu`` export ``WORLD_SIZE``/``RANK``; on a machine
without a GPU a plain ``Accelerator()`` ignores them (it only forms a CPU process group when told
``cpu=True``) and every process would train alone and write the same files. ``make_accelerator``
passes ``cpu=True`` in exactly that case, so the processes join one gloo group.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, NoReturn


def launched_world_size() -> int:
    """Processes the launcher started (1 when run as a plain command)."""
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 1


def has_accelerator_device() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def make_accelerator(**kwargs: Any) -> Any:
    """``accelerate.Accelerator(**kwargs)``, joining the launcher's processes on a CPU-only
    machine too (gloo backend)."""
    from accelerate import Accelerator

    if launched_world_size() > 1 and not has_accelerator_device():
        kwargs.setdefault("cpu", True)
    return Accelerator(**kwargs)


def end_process_group() -> None:
    """Leave the launcher's process group, if this process joined one.

    Every command calls it on its way out (``rlhfkit.cli.main``). A process that exits with its
    gloo group still alive can abort at interpreter shutdown ("terminate called without an active
    exception", exit code -6) while its peers are still writing: seen on a busy machine with
    the rank that has nothing left to write. PyTorch asks for ``destroy_process_group()`` at the
    end of every distributed program for this reason. It is not always enough: see
    :func:`exit_without_finalizing`, which the ``rlhfkit`` program uses in launched processes."""

    if "torch.distributed" not in sys.modules:  # nothing distributed was ever started
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launched_by_a_launcher() -> bool:
    """True in a process that ``torchrun`` or ``accelerate launch`` started."""
    return any(name in os.environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def exit_without_finalizing(code: int) -> NoReturn:
    """End a launched process the way ``sys.exit(code)`` would, minus the interpreter's
    finalization: threads are joined as at any exit, ``atexit`` handlers run (logging's flush,
    multiprocessing's clean-up, trackers), stdout and stderr are flushed, then ``os._exit``.

    Why: :func:`end_process_group` destroys the group, but the C++ gloo group outlives it while
    anything still refers to it (FSDP2's device meshes, DTensor's caches), and so do its worker
    threads. A worker that drops the last reference to a finished collective's tensors needs the
    GIL to do it; if that happens while the interpreter finalizes, Python ends the thread inside
    C++ code and the process aborts ("terminate called without an active exception", exit -6).
    It hit about 1 run in 11 of a two-process FSDP script on 2 cores, whether or not the ranks met
    at a barrier first, and never in 130 runs that left this way. PyTorch's issue: the abandoned
    pytorch/pytorch#179291 (an ``atexit`` ``destroy_process_group``, not enough here for the same
    reason). Every file is written and closed before this is called."""
    import atexit
    import threading

    # what the interpreter does first at exit: threading's own exit hooks (an executor left
    # open wakes its idle workers there), then every non-daemon thread joined
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # closed, or a pipe whose reader left: nothing more to save
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)
