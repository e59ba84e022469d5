"""The optimizer both trainers use: AdamW with PyTorch's fused kernel where it applies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def adamw(params: Iterable[Any], **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with ``fused=True`` when every parameter is a floating-point tensor
    on the CPU or a CUDA device (one kernel per step instead of a loop over tensors: the optimizer
    step of a ~20M-parameter policy fell from 557 ms to 68 ms on a 2-core CPU, docs/benchmarks.md).
    Falls back to the default implementation otherwise. Same update rule either way.
    """
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fusable = bool(tensors) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors
    )
    return torch.optim.AdamW(groups, fused=fusable or None, **kwargs)
