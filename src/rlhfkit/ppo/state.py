"""What a PPO run carries from one update to the next, and across a checkpoint: the data
position, the settings a resume must match, the policy's weights; and the run's logs, cut back to
the checkpoint when it resumes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from rlhfkit.errors import ConfigError
from rlhfkit.ppo.config import _RESUME_MUST_MATCH, _SETTINGS_BEFORE_THEY_EXISTED
from rlhfkit.runtime.checkpoint import (
    Checkpoint,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    stage_shards,
)
from rlhfkit.runtime.fsdp import full_copy, is_sharded, read_shards
from rlhfkit.runtime.io import atomic_dir, write_json
from rlhfkit.runtime.renamed import upgrade_settings


class PromptSampler:
    """Global batches of prompt indices: a fresh seeded permutation each pass over the data.

    The permutation depends only on (seed, epoch), never on the global RNG, so the data position
    ``(epoch, cursor)`` is all a checkpoint needs to continue exactly where the run stopped.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.epoch, self.cursor = 0, 0

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next_batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            perm = self._perm(self.epoch)
            take = min(size - len(out), self.n - self.cursor)
            out += perm[self.cursor : self.cursor + take].tolist()
            self.cursor += take
            if self.cursor == self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "n": self.n}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["n"] != self.n:
            raise ConfigError(
                f"the prompts file changed: {self.n} prompts, checkpoint has {state['n']}"
            )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])


def resume_mismatches(
    saved: dict[str, Any], now: dict[str, Any], saved_world: Any, world: int
) -> list[str]:
    """The settings (and process count) that differ between a checkpoint and this run; a
    setting added after the checkpoint was written counts as the value that run trained with."""
    saved = {**_SETTINGS_BEFORE_THEY_EXISTED, **upgrade_settings(saved)}
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}"
             for k in _RESUME_MUST_MATCH if saved.get(k) != now[k]]  # fmt: skip
    if saved_world != world:
        diffs.append(f"processes: checkpoint {saved_world}, now {world}")
    return diffs


def start_run_files(out: Path, settings: dict[str, Any], resumed: bool) -> None:
    """``OUT/config.json`` (``settings``: as given, and what they became for this policy); a
    fresh run into a used directory starts its own logs (they are appended to)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", settings)
    if not resumed:
        for name in ("metrics.jsonl", "samples.jsonl"):
            (out / name).unlink(missing_ok=True)


def checkpoint_to_resume(
    out: Path, settings: dict[str, Any], world: int
) -> tuple[Path, Checkpoint] | None:
    """The newest checkpoint in ``out`` (None, warned, when there is none), refusing one made with
    other ``settings`` (as trained) or another number of processes."""
    path = latest_checkpoint(out)
    if path is None:
        warnings.warn(
            f"--resume: no checkpoint in {out / 'checkpoints'}; starting fresh", stacklevel=3
        )
        return None
    ckpt = load_checkpoint(path)
    state = ckpt.state
    diffs = resume_mismatches(state.get("config", {}), settings, state.get("world_size"), world)
    if diffs:
        raise ConfigError(f"cannot resume from {path}: settings differ — " + "; ".join(diffs))
    return path, ckpt


def load_policy_weights(policy: Any, directory: Path, lora: bool, dtype: torch.dtype) -> None:
    """Put a checkpoint's policy weights (LoRA adapters, or the whole model) into ``policy``."""
    if lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(policy, load_file(str(directory / "adapter_model.safetensors")))
        return
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    policy.load_state_dict(loaded.state_dict())


def save_run_checkpoint(
    accelerator: Any, out: Path, step: int, state: dict[str, Any], model: Any, tokenizer: Any,
    optimizer: Any, scheduler: Any, keep: int | None,
) -> Path | None:  # fmt: skip
    """``OUT/checkpoints/step-N/`` with everything needed to resume (see
    :mod:`rlhfkit.runtime.checkpoint`): the policy (its adapters under LoRA) and tokenizer, the
    critic, optimizer and scheduler states, every process's RNG state, and ``state``. Written by
    the main process; returns its path there (None elsewhere). A sharded model and its optimizer
    are written by every process, its own shard each (``sharded/``)."""
    from accelerate.utils import gather_object

    rng = gather_object([capture_rng_state()])  # one entry per process, rank order
    accelerator.wait_for_everyone()
    path = None
    if is_sharded(model):
        shards = stage_shards(accelerator, out, step, model, optimizer)
        if accelerator.is_main_process:
            path = save_checkpoint(
                out, step, state=state, directories={"sharded": shards},
                objects={"scheduler": scheduler.state_dict(), "rng": rng}, keep_last=keep,
            )  # fmt: skip
    elif accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        path = save_checkpoint(
            out, step, state=state,
            models={"policy": unwrapped.policy}, tokenizers={"policy": tokenizer},
            tensors={"critic": unwrapped.critic_state_dict()},
            objects={"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": rng},
            keep_last=keep,
        )  # fmt: skip
    accelerator.wait_for_everyone()
    return path


def restore_run_checkpoint(
    ckpt: Any, accelerator: Any, model: Any, optimizer: Any, scheduler: Any, lora: bool,
    dtype: torch.dtype,
) -> None:  # fmt: skip
    """Put a checkpoint's weights, critic, optimizer and scheduler states and this process's RNG
    state back (the counters and data position are the caller's, in ``ckpt.state``)."""
    if is_sharded(model):
        read_shards(ckpt.model_dir("sharded"), model, optimizer)
    else:
        unwrapped = accelerator.unwrap_model(model)
        load_policy_weights(unwrapped.policy, ckpt.model_dir("policy"), lora, dtype)
        device = accelerator.device
        critic = {k: v.to(device) for k, v in ckpt.tensors("critic").items()}
        unwrapped.load_critic_state_dict(critic)
        optimizer.load_state_dict(ckpt.object("optimizer"))
    scheduler.load_state_dict(ckpt.object("scheduler"))
    restore_rng_state(ckpt.object("rng")[accelerator.process_index])


def save_tuned_policy(
    accelerator: Any, model: Any, tokenizer: Any, path: str | Path, *, lora: bool, fsdp: bool
) -> None:
    """The tuned policy of ``model`` (policy + critic) as a plain model (LoRA adapters merged) +
    tokenizer, atomically, by the main process. A sharded policy is gathered onto it first."""
    accelerator.wait_for_everyone()
    policy = accelerator.unwrap_model(model).policy
    if fsdp:
        policy = full_copy(policy)  # every process takes part; None but on the main one
    if not accelerator.is_main_process:
        return
    if lora and not fsdp:
        policy = _merged_copy(policy)
    with atomic_dir(path) as tmp:
        policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _merged_copy(peft_model: Any) -> Any:
    """A copy of a PEFT model with its adapters merged into plain weights."""
    import copy

    return copy.deepcopy(peft_model).merge_and_unload()
