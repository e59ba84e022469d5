"""Starting Accelerate the same way under every launcher, CPU included.

``torchrun`` and ``accelerate launch --multi_gpu`` export ``WORLD_SIZE``/``RANK``; on a machine
without a GPU a plain ``Accelerator()`` ignores them (it only forms a CPU process group when told
``cpu=True``) and every process would train alone and write the same files. ``make_accelerator``
passes ``cpu=True`` in exactly that case, so the processes join one gloo group.
"""

from __future__ import annotations

import os
from typing import Any


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
    end of every distributed program for this reason."""
    import sys

    if "torch.distributed" not in sys.modules:  # nothing distributed was ever started
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
