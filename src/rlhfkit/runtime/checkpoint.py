"""Atomic training checkpoints that hold everything an exact resume needs.

Layout of ``OUT/checkpoints/step-N/`` (written under a temporary name, then renamed, so a kill at
any moment leaves the previous checkpoint intact and never a half-written one):

- ``<model>/``              each model via ``save_pretrained`` (the policy with its tokenizer: a
                            loadable model on its own; a PEFT policy saves its adapters);
- ``<name>.safetensors``    extra tensors (the critic: value head and separate backbone);
- ``<name>.pt``             ``torch.save`` objects: ``optimizer``, ``scheduler``, ``rng`` (python,
                            numpy, torch CPU and CUDA generator states, one entry per process);
- ``sharded/``              with ``--fsdp``: the sharded model and optimizer states, one file per
                            process (``torch.distributed.checkpoint``; :func:`stage_shards`);
- ``trainer_state.json``    step, episode, data position, KL-controller state, counters, config.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.runtime.faults import kill_point
from rlhfkit.runtime.io import atomic_dir

STATE_FILE = "trainer_state.json"


class TrainingStopped(RlhfkitError):
    """The run stopped itself (non-finite values kept coming); the message names the last good
    checkpoint."""


_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoints_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``OUT/checkpoints``, oldest first.

    Temporary directories of an interrupted save start with a dot and are ignored.
    """
    root = checkpoints_root(out_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def capture_rng_state() -> dict[str, Any]:
    """The state of every random generator a run draws from (python, numpy, torch CPU/CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    *,
    state: dict[str, Any],
    models: dict[str, Any] | None = None,
    tokenizers: dict[str, Any] | None = None,
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    objects: dict[str, Any] | None = None,
    directories: dict[str, Path] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write ``OUT/checkpoints/step-<step>/`` atomically, then delete all but the ``keep_last``
    newest checkpoints. Call on the main process only. Returns the checkpoint's path.

    ``models``: name -> object with ``save_pretrained``; ``tokenizers``: name -> tokenizer saved
    into the same-named directory; ``tensors``: name -> state dict (safetensors); ``objects``:
    name -> anything ``torch.save`` takes; ``directories``: name -> a directory already written
    (:func:`stage_shards`), moved in; ``state``: a JSON-able dict.
    """
    from safetensors.torch import save_file

    final = checkpoints_root(out_dir) / f"step-{step}"
    remove_stale_temporaries(out_dir, keep=(directories or {}).values())
    with atomic_dir(final) as tmp:
        for name, directory in (directories or {}).items():
            os.replace(directory, tmp / name)
        for name, model in (models or {}).items():
            model.save_pretrained(tmp / name)
        for name, tok in (tokenizers or {}).items():
            tok.save_pretrained(tmp / name)
        for name, tdict in (tensors or {}).items():
            # clone: safetensors refuses tensors that share storage (tied weights)
            save_file(
                {k: v.detach().cpu().contiguous().clone() for k, v in tdict.items()},
                str(tmp / f"{name}.safetensors"),
            )
        for name, obj in (objects or {}).items():
            torch.save(obj, tmp / f"{name}.pt")
        kill_point("checkpoint-save", step)  # crash tests: files half there, nothing renamed
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, default=str) + "\n")
    if keep_last is not None and keep_last > 0:
        prune_checkpoints(out_dir, keep_last)
    return final


def remove_stale_temporaries(out_dir: str | Path, keep: Iterable[Path] = ()) -> list[Path]:
    """Delete what a save killed half-way left behind (``.step-N.*.tmp``, ``.step-N.old``), except
    ``keep`` (the staged shards of the save in progress).

    Call on the main process only, when no other save is in progress.
    """
    root = checkpoints_root(out_dir)
    if not root.is_dir():
        return []
    kept = {Path(p).resolve() for p in keep}
    stale = [p for p in root.iterdir() if p.name.startswith(".step-") and p.resolve() not in kept]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return stale


def stage_shards(
    accelerator: Any, out_dir: str | Path, step: int, model: Any, optimizer: Any
) -> Path:
    """Every process writes its shard of a sharded model and its optimizer into
    ``OUT/checkpoints/.step-N.sharded.tmp`` (``torch.distributed.checkpoint``), for the main
    process's :func:`save_checkpoint` to move into ``step-N/sharded``. Collective; ``OUT`` must be on
    a filesystem every process sees. A kill leaves only a temporary that the next save removes."""
    from rlhfkit.runtime.fsdp import write_shards

    staging = checkpoints_root(out_dir) / f".step-{step}.sharded.tmp"
    if accelerator.is_main_process:
        remove_stale_temporaries(out_dir)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write_shards(staging, model, optimizer)
    accelerator.wait_for_everyone()
    return staging


def prune_checkpoints(out_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints; returns the deleted paths."""
    found = list_checkpoints(out_dir)
    doomed = [p for _, p in found[:-keep_last]] if keep_last > 0 else []
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


@dataclass
class Checkpoint:
    """A checkpoint directory opened for reading."""

    path: Path
    state: dict[str, Any]

    def model_dir(self, name: str) -> Path:
        return self.path / name

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path / f"{name}.safetensors"))

    def has(self, name: str) -> bool:
        return (self.path / f"{name}.pt").is_file() or (self.path / f"{name}.safetensors").is_file()

    def object(self, name: str) -> Any:
        # weights_only=False: the RNG states hold numpy arrays and python tuples; these files are
        # written by rlhfkit itself into the user's own run directory.
        return torch.load(self.path / f"{name}.pt", map_location="cpu", weights_only=False)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise ConfigError(f"{path}: not a checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{state_file}: unreadable checkpoint state ({e})") from None
    return Checkpoint(path=path, state=state)
