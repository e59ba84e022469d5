"""What a reward-model run writes and reads back: ``OUT/checkpoints/step-N/`` (through the one
checkpoint system, :mod:`rlhfkit.runtime.checkpoint`) and the exact resume from it, the final
model replacing OUT atomically, and a multi-head ensemble's members in ``OUT/member-i/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit.cards import publish_reward_model, reward_model_card, write_card
from rlhfkit.errors import ConfigError
from rlhfkit.reward.batching import Item
from rlhfkit.reward.config import RewardConfig, fingerprint, resume_mismatches
from rlhfkit.reward.evaluate import evaluate, jsonable, normalize
from rlhfkit.runtime.checkpoint import (
    TrainingStopped,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    stage_shards,
)
from rlhfkit.runtime.fsdp import full_copy, is_sharded, read_shards
from rlhfkit.runtime.io import (
    atomic_dir,
    clear_previous_run,
    link_or_copy,
    recover_interrupted_dir,
    truncate_jsonl,
    write_json,
)
from rlhfkit.runtime.trackers import LOGGING_DIR

if TYPE_CHECKING:
    from rlhfkit.reward.steps import Training

CHECKPOINTS = "checkpoints"


@dataclass
class Progress:
    """The counters a checkpoint carries (besides the model, optimizer, scheduler and RNG)."""

    step: int = 0
    bad_in_a_row: int = 0
    nonfinite_total: int = 0
    skipped_in_interval: int = 0
    last_good: str | None = None

    def skipped(self, out: Path, max_bad_steps: int) -> None:
        """One more optimizer step skipped for a non-finite loss or gradient; after
        ``max_bad_steps`` in a row, stop (naming the last good checkpoint)."""
        self.bad_in_a_row += 1
        self.nonfinite_total += 1
        self.skipped_in_interval += 1
        if self.bad_in_a_row >= max_bad_steps:
            raise TrainingStopped(
                f"{self.bad_in_a_row} optimizer steps in a row had a non-finite loss or "
                "gradient (none was applied); stopping. Last good checkpoint: "
                + (self.last_good or f"none was saved (use --save-every); {out} was left as it was")
            )


def prepare_out(out: Path, config: RewardConfig, main: bool) -> None:
    """Recover from a kill during the final save; refuse to mix two runs in one OUT."""
    recover_interrupted_dir(out)  # a kill while the final save replaced OUT left the old one aside
    if config.resume and latest_checkpoint(out) is None:
        raise ConfigError(
            f"{out}: --resume given but there is no checkpoint in {out / CHECKPOINTS}"
        )
    clear_previous_run(
        out, ("metrics.jsonl", CHECKPOINTS, LOGGING_DIR),
        resume=config.resume, overwrite=config.overwrite, delete=main,
    )  # fmt: skip


# ------------------------------------------------------------------------- checkpoint and resume


def write_checkpoint(training: Training, run: Progress, steps_per_epoch: int, n_train: int) -> str:
    """``OUT/checkpoints/step-N/`` through the one checkpoint system (:mod:`rlhfkit.runtime.checkpoint`):
    the weights, optimizer and scheduler states, every process's RNG state and the counters."""
    config, accelerator, model, optimizer = training.parts()
    out = Path(config.out)
    rng = _gather([capture_rng_state()])  # one entry per process, rank order
    accelerator.wait_for_everyone()
    path = out / CHECKPOINTS / f"step-{run.step}"
    # A sharded model and its optimizer: every process writes its shard (sharded/).
    shards = (
        stage_shards(accelerator, out, run.step, model, optimizer) if is_sharded(model) else None
    )
    if accelerator.is_main_process:
        state = {
            "step": run.step,
            "epoch": run.step // steps_per_epoch,
            "step_in_epoch": run.step % steps_per_epoch,
            "n_train": n_train,
            "world_size": accelerator.num_processes,
            "bad_in_a_row": run.bad_in_a_row,
            "nonfinite_total": run.nonfinite_total,
            "config": fingerprint(config),
        }
        objects = {"scheduler": training.scheduler.state_dict(), "rng": rng}
        tensors, directories = {}, {}
        if shards is None:
            tensors["reward_model"] = accelerator.unwrap_model(model).state_dict()
            objects["optimizer"] = optimizer.state_dict()
        else:
            directories["sharded"] = shards
        path = save_checkpoint(
            out, run.step, state=state, tensors=tensors, objects=objects,
            directories=directories, keep_last=config.save_total_limit,
        )  # fmt: skip
    accelerator.wait_for_everyone()
    return str(path)


def _gather(objects: list[Any]) -> list[Any]:
    from accelerate.utils import gather_object

    return gather_object(objects)


def resume_run(training: Training, n_train: int) -> Progress:
    """The newest checkpoint's weights, optimizer, scheduler and RNG states, and counters;
    refused when the settings, the data or the number of processes changed."""
    config, accelerator, model, optimizer = training.parts()
    out = Path(config.out)
    path = latest_checkpoint(out)
    ckpt = load_checkpoint(path)
    state = ckpt.state
    changed = resume_mismatches(state["config"], config)
    saved_world = state.get("world_size", 1)
    if saved_world != accelerator.num_processes:
        changed["processes"] = (saved_world, accelerator.num_processes)
    if changed:
        diff = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(f"{path}: cannot resume with changed settings ({diff})")
    if state["n_train"] != n_train:
        raise ConfigError(
            f"{path}: the training data changed ({state['n_train']} -> {n_train} prompts)"
        )
    if is_sharded(model):
        read_shards(ckpt.model_dir("sharded"), model, optimizer)
    elif not ckpt.has("reward_model"):
        raise ConfigError(
            f"{path}: written by an older rlhfkit (before reward-model checkpoints used the common "
            "format); start afresh with --overwrite"
        )
    else:
        accelerator.unwrap_model(model).load_state_dict(ckpt.tensors("reward_model"))
        optimizer.load_state_dict(ckpt.object("optimizer"))
    training.scheduler.load_state_dict(ckpt.object("scheduler"))
    restore_rng_state(ckpt.object("rng")[accelerator.process_index])
    step = int(state["step"])
    if accelerator.is_main_process:
        truncate_jsonl(out / "metrics.jsonl", step)  # a crashed run's tail
    return Progress(
        step=step,
        bad_in_a_row=int(state.get("bad_in_a_row", 0)),
        nonfinite_total=int(state.get("nonfinite_total", 0)),
        last_good=str(path),
    )


# ------------------------------------------------------------------------------ final save


def with_model(rm: Any, model: Any) -> Any:
    """The same reward model (tokenizer, settings) around another copy of its weights."""
    from rlhfkit.reward.model import RewardModel

    return RewardModel(model, rm.tokenizer, rm.settings) if model is not None else rm


def save_final(rm: Any, out: Path, extra_json: dict[str, Any]) -> None:
    """Replace OUT atomically with the model + tokenizer + ``extra_json`` files, carrying over the
    run's other files (metrics.jsonl, checkpoints/) by hard link, so that a kill at any moment
    leaves the old OUT or the new one, never a mix."""
    import shutil

    with atomic_dir(out) as tmp:
        rm.save_pretrained(tmp)
        for name, obj in extra_json.items():
            write_json(tmp / name, obj)
        if out.is_dir():
            for entry in out.iterdir():
                if (tmp / entry.name).exists():
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, tmp / entry.name, copy_function=link_or_copy)
                else:
                    link_or_copy(entry, tmp / entry.name)


def save_heads(
    rm: Any, heads: int, config: RewardConfig, accelerator: Any, train_rankings: list[Any],
    eval_items: list[Item], say: Any,
) -> dict[str, Any]:  # fmt: skip
    """Each head with the trunk becomes an ordinary reward model in ``OUT/member-i/``: normalized
    on the reference responses, evaluated on the held-out rankings (its ``eval.json``)."""
    members = []
    for i in range(heads):
        member = rm.single_head(i)
        if config.normalize:
            normalize(member, config, accelerator, train_rankings, say)
        res = (
            evaluate(member, eval_items, accelerator, config.eval_batch_size) if eval_items else {}
        )
        if accelerator.is_main_process:
            with atomic_dir(Path(config.out) / f"member-{i}") as tmp:
                member.save_pretrained(tmp)
                write_json(tmp / "eval.json", jsonable(res))
            path = Path(config.out) / f"member-{i}"
            write_card(path, reward_model_card(config, jsonable(res), path))
        members.append(res)
        say(f"head {i}: held-out accuracy {res.get('accuracy', float('nan')):.4f}")
    accelerator.wait_for_everyone()
    return {"members": members}


def save_run(
    rm: Any, config: RewardConfig, accelerator: Any, results: dict[str, Any], say: Any
) -> None:
    """OUT becomes the reward model directory with its ``eval.json``, atomically, written by the
    main process; then its model card (and the upload with ``--push-to-hub``)."""
    main = accelerator.is_main_process
    accelerator.wait_for_everyone()
    if config.fsdp:  # gathered onto the main process (None elsewhere), as one plain model
        rm = with_model(rm, full_copy(rm.model))
    if main:
        save_final(rm, Path(config.out), {"eval.json": jsonable(results)})
        say(f"saved the reward model to {config.out}")
    accelerator.wait_for_everyone()
    if main:  # OUT/README.md, the model card (and the upload with --push-to-hub)
        publish_reward_model(config, jsonable(results))
