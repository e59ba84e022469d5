"""Linear layers with their weights packed for oneDNN while a model samples on an x86 CPU.

A decoding step multiplies only a few rows (one per sequence) by every weight matrix, where the MKL
``sgemm`` behind ``torch.nn.functional.linear`` runs below its large-batch rate. oneDNN's matmul
over a weight reordered once into its blocked layout runs GPT-2-sized products of 32-64 rows
(512 × 512 and up) 1.1-1.9× faster on one thread of an AMD EPYC, 1.2-2.9× on two (0.95-1.45× with
oneDNN held to AVX2; docs/benchmarks.md, "oneDNN-packed weights while sampling"). On small matrices
its fixed cost per call loses: 96 → 288 runs at 0.68-0.83× of ``sgemm``. So :func:`packed_linears`
packs only weights of at least :data:`MIN_PACKED_WEIGHTS` entries (on an Intel CPU, whose MKL
``sgemm`` runs better, only a real vocabulary's head: :func:`min_packed_weights`), and only while
it is open: the sampler opens it around a call (a loop over batches around the loop), after the
weights last changed.

Packing is the same arithmetic in another order: over three seeds × 32 rows × 32 tokens of a ~20M
GPT-2 the samples were identical, and log-probabilities differed by at most 4e-6 (at most 1e-5 on
a Qwen2-0.5B shape, whose near-uniform draws over 152k tokens can then differ). It costs a
second copy of the packed weights while it is open; ``RLHFKIT_PACK_WEIGHTS=0`` switches it off.

Only layers that are exactly ``torch.nn.Linear`` or ``transformers``' ``Conv1D`` with a plain fp32
CPU weight are packed (not quantized subclasses, sharded or offloaded layers, nor layers with a
forward of their own already set, such as Accelerate's hooks). A packed layer runs its own forward
whenever gradients are on, CPU autocast is, or its input is not fp32: a training forward inside the
block stays exact.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from typing import Any

import torch

ENV = "RLHFKIT_PACK_WEIGHTS"
# 512 × 512. Products break even near 192 × 576 entries; below 2^18 a whole sampling run gained
# nothing beyond the noise (the demo policy's 96 × 1,827 head packed: 1.00-1.13× against 0.95-1.06×
# for no change), and the demo's samples stay bit for bit what they were.
MIN_PACKED_WEIGHTS = 1 << 18
# On an Intel CPU, where MKL's sgemm runs its own best code: only layers of 2^24 weights and up,
# a real vocabulary's head (GPT-2's 768 × 50,257, Qwen2-0.5B's 896 × 151,936).
MIN_PACKED_WEIGHTS_INTEL = 1 << 24


def packing_available() -> bool:
    """Whether this process packs: an x86-64 CPU, torch built with oneDNN and it not switched off
    (``torch.backends.mkldnn.enabled``), and ``$RLHFKIT_PACK_WEIGHTS`` not ``0``. The speed-up was
    measured on x86 only; elsewhere the sampler keeps the plain path."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def min_packed_weights(cpuinfo: str = "/proc/cpuinfo") -> int:
    """The fewest weights a layer needs to be packed on this CPU: :data:`MIN_PACKED_WEIGHTS`, or
    :data:`MIN_PACKED_WEIGHTS_INTEL` on an Intel CPU (Linux's ``/proc/cpuinfo`` says
    ``GenuineIntel``). MKL's ``sgemm`` runs its own best code on Intel CPUs and generic AVX2 code on
    others (AMD's), where oneDNN's packed layers gained 1.1-1.4× on a whole sampling call of a
    ~20M GPT-2. On an Intel Xeon (AVX-512, AMX) packing those 512-2,048-wide layers lost up to 14%
    on two threads and gained nothing on one (reordering the weights cost 55-134 ms a call), while
    packing a Qwen2-0.5B shape's 896 × 151,936 head alone gained 1.05-1.17× against packing nothing
    and every layer lost (docs/benchmarks.md, "Sampling on an Intel Xeon (session 24)")."""
    from rlhfkit.runtime.cores import cpuinfo_field

    intel = cpuinfo_field("vendor_id", cpuinfo) == "GenuineIntel"
    return MIN_PACKED_WEIGHTS_INTEL if intel else MIN_PACKED_WEIGHTS


def _weight_and_bias(
    module: torch.nn.Module, min_weights: int = MIN_PACKED_WEIGHTS
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The (out, in) weight and the bias of a layer that can be packed, else None."""
    from transformers.pytorch_utils import Conv1D

    kind = type(module)
    if kind is not torch.nn.Linear and kind is not Conv1D:
        return None
    if "forward" in module.__dict__ or hasattr(module, "_hf_hook"):
        return None  # somebody else already wraps this layer's forward
    weight, bias = module.weight, module.bias
    for t in (weight, bias):
        if t is not None and (
            type(t.data) is not torch.Tensor
            or t.dtype != torch.float32
            or t.device.type != "cpu"
            or t.layout != torch.strided
        ):
            return None
    if weight.numel() < min_weights:
        return None
    w = weight.detach()
    if kind is Conv1D:  # GPT-2 stores (in, out)
        w = w.t()
    return w.contiguous(), (bias.detach() if bias is not None else None)


def _packed_forward(
    module: torch.nn.Module, packed: torch.Tensor, bias: torch.Tensor | None, out_features: int
):
    plain = type(module).forward.__get__(module)

    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if (
            args
            or kwargs
            or torch.is_grad_enabled()
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or torch.is_autocast_enabled("cpu")
        ):
            return plain(x, *args, **kwargs)
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, shape[-1]), packed, bias, "none", [], ""
        )  # (N, out)
        return y.view(*shape[:-1], out_features)

    return forward


@contextlib.contextmanager
def packed_linears(model: Any, rows: int | None = None) -> Iterator[int]:
    """Pack ``model``'s large linear layers for oneDNN while the block is open; yields how many
    were packed (0 where :func:`packing_available` is False, or the model has none large enough).

    ``rows``: the rows each call will multiply (the batch), oneDNN's hint for the layout; any
    number of rows works. The weights must not change inside the block: a packed layer reads its
    copy. Every layer runs its own forward again when the block closes, whatever happened in it.
    """
    if not packing_available() or hasattr(model, "_orig_mod"):  # torch.compile'd: leave it be
        yield 0
        return
    patched: list[torch.nn.Module] = []
    try:
        min_weights = min_packed_weights()
        with torch.no_grad():
            for module in model.modules():
                found = _weight_and_bias(module, min_weights)
                if found is None:
                    continue
                weight, bias = found
                packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
                module.forward = _packed_forward(module, packed, bias, weight.shape[0])
                patched.append(module)
        yield len(patched)
    finally:
        for module in patched:
            del module.forward
