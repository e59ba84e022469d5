"""Sharding models too big for one device with FSDP2 (``torch.distributed.fsdp.fully_shard``).

Accelerate does not shard on a CPU (with ``distributed_type: FSDP`` its ``distributed_type`` reads
``NO`` there and every process trains alone), so rlhfkit calls ``fully_shard`` itself, on every
device: the CPU test with gloo and a GPU run with NCCL go through the same lines. Accelerate still
starts the processes, forms the process group and reduces the logged metrics.

How a model is sharded (:func:`shard`): each transformer block is one FSDP unit (found from the
model's ``_no_split_modules``, else its longest list of same-class layers), then each sub-model
that is called on its own (the policy inside policy + critic, a reward model's trunk), then the
whole model. A unit's parameters are all-gathered before its forward and freed after it; its
gradients are reduce-scattered after its backward, so each process keeps 1/N of the parameters,
gradients and optimizer state.

Generation is the exception (:func:`gathered`): sampling a response runs the policy once per new
token, so all its parameters are gathered once before a rollout and freed after it, not gathered
again for every token.

Checkpoints: :func:`write_shards` / :func:`read_shards` save and load the sharded model and
optimizer states with ``torch.distributed.checkpoint`` (each process writes its own shard);
:func:`full_copy` gathers a plain Hugging Face model on the main process for ``save_pretrained``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfkit.errors import ConfigError


@dataclass(frozen=True)
class FsdpSettings:
    """How to shard: what ``--fsdp`` means, adjusted by an Accelerate FSDP config when the run was
    launched with one (``accelerate launch --config_file fsdp.yaml``)."""

    reshard_after_forward: bool = True
    """Free a block's gathered parameters after its forward (re-gather in backward): least memory."""
    block_classes: tuple[str, ...] = ()
    """Class names of the units to shard (empty: the model's ``_no_split_modules``)."""
    param_dtype: torch.dtype | None = None
    """Compute dtype of the gathered parameters (bf16 mixed precision); None: as stored."""


def launched_with_fsdp() -> bool:
    """Whether ``accelerate launch`` was given an FSDP config (it exports ``ACCELERATE_USE_FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")


def fsdp_settings(mixed_precision: str = "no") -> FsdpSettings:
    """The settings of this run: ``--fsdp``'s defaults, with what an Accelerate FSDP config asks for
    (``fsdp_reshard_after_forward``, ``fsdp_transformer_layer_cls_to_wrap``, ``mixed_precision``).
    Settings rlhfkit cannot honour are refused, naming the option."""
    version = os.environ.get("FSDP_VERSION", "2") if launched_with_fsdp() else "2"
    if version != "2":
        raise ConfigError(
            f"the Accelerate config asks for FSDP version {version}; rlhfkit shards with FSDP2: "
            "set fsdp_version: 2 (docs/scaling.md)"
        )
    if os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        raise ConfigError(
            "fsdp_offload_params: true is not supported by rlhfkit; set it to false (docs/scaling.md)"
        )
    if mixed_precision == "fp16":
        raise ConfigError(
            "fp16 with FSDP needs a sharded gradient scaler; use bf16 (docs/scaling.md)"
        )
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() != "false"
    names = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    return FsdpSettings(
        reshard_after_forward=reshard,
        block_classes=tuple(n.strip() for n in names.split(",") if n.strip()),
        param_dtype=torch.bfloat16 if mixed_precision == "bf16" else None,
    )


# ------------------------------------------------------------------------------ what to shard


def transformer_blocks(model: nn.Module, class_names: Iterable[str] = ()) -> list[nn.Module]:
    """The model's transformer blocks: modules whose class is named in ``class_names``, else in
    any submodule's ``_no_split_modules`` (Hugging Face's list of what must stay on one device),
    else the children of its longest ``nn.ModuleList`` of same-class layers. A candidate that shares
    a parameter with a module outside it (a tied embedding) is left to its parent's unit: FSDP needs
    a shared parameter in one unit."""
    names = set(class_names)
    if not names:
        for m in model.modules():
            names |= set(getattr(m, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        lists = [
            list(m)
            for m in model.modules()
            if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(c) for c in m}) == 1
        ]
        blocks = max(lists, key=len, default=[])
    owners: dict[int, set[int]] = {}  # parameter -> the modules that register it directly
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), set()).add(id(m))
    kept = []
    for block in blocks:
        inside = {id(m) for m in block.modules()}
        if all(owners[id(p)] <= inside for p in block.parameters()):
            kept.append(block)
    return kept


def device_mesh(device: torch.device) -> Any:
    """A one-dimensional mesh over every process (full sharding), on this process's device type."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        # One process, started as a plain command: a group of one (nothing to shard across, but
        # the same code path as several processes).
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return init_device_mesh(device.type, (dist.get_world_size(),))


def shard(
    model: nn.Module, mesh: Any, settings: FsdpSettings, units: Iterable[nn.Module | None] = ()
) -> nn.Module:
    """Shard ``model`` in place, bottom-up: each transformer block, then each of ``units`` (the
    sub-models that are called on their own), then the model itself. Returns ``model``."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(
        param_dtype=settings.param_dtype,
        reduce_dtype=torch.float32 if settings.param_dtype is not None else None,
    )
    inner = settings.reshard_after_forward
    # The root too frees its parameters after forward (FSDP keeps a root's gathered by default):
    # PPO writes into a value head between forwards, which must reach the shards.
    # rlhfkit never modifies a model's outputs in place, which is what FSDP warns about when a
    # module returns a view (logits[:, -keep:]).
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    plan = [(b, inner) for b in transformer_blocks(model, settings.block_classes)]
    plan += [(u, inner) for u in units if u is not None] + [(model, True)]
    for module, reshard_after_forward in plan:
        fully_shard(module, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
        module.rlhfkit_reshard_after_forward = reshard_after_forward  # restored by gathered()
    # FSDP makes the first module to run forward its root. PPO calls sub-models on their own (the
    # policy generates before policy + critic ever ran), so the root is initialized here.
    model._get_fsdp_state()._lazy_init()
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Every parameter of a sharded ``model`` gathered for the duration (one all-gather per unit,
    not one per unit per forward), then freed again; nothing to do for an unsharded model.

    For generation, which runs the model once per new token."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    for unit in units:
        unit.unshard()
    model.set_reshard_after_forward(False)  # every unit, recursively: keep them gathered
    try:
        yield
    finally:
        for unit in units:
            again = getattr(unit, "rlhfkit_reshard_after_forward", True)
            unit.set_reshard_after_forward(again, recurse=False)
            unit.reshard()


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm of sharded parameters (their shards on every process); returns
    the norm before clipping as a plain tensor, the same on every process."""
    norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


# -------------------------------------------------------------------------------- checkpoints


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Frozen weights (a LoRA policy's base) are not saved: they come back from --policy.
    return StateDictOptions(ignore_frozen_params=True, **kw)


def write_shards(directory: str | Path, model: nn.Module, optimizer: Any) -> None:
    """Every process writes its shard of the model's trainable weights and buffers and of the
    optimizer state into ``directory`` (torch.distributed.checkpoint). Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(directory))


def read_shards(directory: str | Path, model: nn.Module, optimizer: Any) -> None:
    """Load what :func:`write_shards` wrote into the sharded ``model`` and ``optimizer``. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
        options=_options(strict=False),
    )  # fmt: skip


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict, gathered onto the main process's CPU ({} on the others). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def original_class(model: nn.Module) -> type:
    """The class a module had before ``fully_shard`` gave it an FSDP subclass."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def full_copy(model: nn.Module) -> nn.Module | None:
    """A plain (unsharded) copy of a sharded Hugging Face model on the main process, for
    ``save_pretrained``; None on the others. Collective. A PEFT model comes back with its adapters
    merged into the weights."""
    state = full_state_dict(model)
    if not state:
        return None
    peft_config = getattr(model, "peft_config", None)
    base = model.get_base_model() if peft_config else model
    # Built on the meta device (no memory, no random init), then given the gathered tensors.
    with torch.device("meta"):
        plain = original_class(base)(base.config)
    if peft_config:
        from rlhfkit.loading import with_lora_adapters

        plain = with_lora_adapters(plain, peft_config["default"])
    plain.load_state_dict(state, assign=True)
    if peft_config:
        plain = plain.merge_and_unload()
    if hasattr(plain, "tie_weights"):
        plain.tie_weights()
    return plain.eval()
