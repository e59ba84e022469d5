"""The demo's PPO runs: one after the other in this process, or side by side in worker processes
(one progress bar each, fed from the runs' own metrics.jsonl; their warnings shown here)."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.markup import escape

from rlhfkit.demo.sampling import init_worker, worker_context
from rlhfkit.runtime.cores import torch_threads

Say = Callable[[str], None]


@contextmanager
def warnings_to(say: Say) -> Iterator[None]:
    """Show warnings raised inside (e.g. the live hacking monitor's) as demo output lines rather
    than as Python warnings with a file name and a source line."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        say(f"      [yellow]{escape(str(message))}[/]")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def default_processes() -> int:
    """One worker process per core torch may use (``OMP_NUM_THREADS=1``, for a busy machine, keeps
    all the work in this process)."""
    import torch

    from rlhfkit.runtime.cores import usable_cores

    return max(1, min(torch.get_num_threads(), len(usable_cores())))


def run_ppo(
    configs: dict[str, Any], reward_model: Any, say: Say, console: Any, processes: int,
    threads: int | None = None,
) -> dict[str, float]:  # fmt: skip
    """Train every PPO run; returns each run's seconds. ``reward_model`` (already loaded) serves
    the runs on a single reward model; a run on an ensemble loads it with its objective. With
    ``processes`` > 1 the runs train side by side in worker processes, one progress bar each,
    fed from the runs' own metrics.jsonl; their warnings (the live hacking monitor's) are shown
    here. Each run trains with ``threads`` torch threads (None: in this process as many as torch
    has, side by side torch's threads split between the processes)."""
    if processes <= 1:
        return _run_one_after_another(configs, reward_model, say, threads)
    return _run_side_by_side(configs, console, processes, threads)


def _run_one_after_another(
    configs: dict[str, Any], reward_model: Any, say: Say, threads: int | None = None
) -> dict[str, float]:
    """Every run in this process, in turn; its warnings as demo output lines."""
    from rlhfkit.ppo import PPOTrainer
    from rlhfkit.reward.ensemble import is_ensemble
    from rlhfkit.world import gold_reward_fn

    seconds: dict[str, float] = {}
    for name, config in configs.items():
        t0 = time.perf_counter()
        reward = _load_reward(config) if is_ensemble(config.reward_model) else reward_model
        with warnings_to(say), torch_threads(threads):
            PPOTrainer(config, reward_model=reward, gold_reward_fn=gold_reward_fn).train()
        seconds[name] = time.perf_counter() - t0
    return seconds


def _run_side_by_side(
    configs: dict[str, Any], console: Any, processes: int, threads: int | None = None
) -> dict[str, float]:
    """At most ``processes`` runs at once, each in a worker process that loads its own reward
    model; a run that fails, or whose process dies, stops them all."""
    import queue as queue_module

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rlhfkit.errors import RlhfkitError

    seconds: dict[str, float] = {}
    threads = threads or max(1, torch.get_num_threads() // processes)
    ctx = worker_context()  # not a fork of this process: it would copy torch's thread pool state
    messages = ctx.Queue()
    waiting = list(configs)
    running: dict[str, Any] = {}
    progress = Progress(
        TextColumn("      {task.description:>14}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
    )  # fmt: skip
    tasks = {
        name: progress.add_task(name, total=config.num_updates, info="")
        for name, config in configs.items()
    }
    try:
        with progress:
            while waiting or running:
                while waiting and len(running) < processes:
                    name = waiting.pop(0)
                    running[name] = _start_run(ctx, name, configs[name], threads, messages)
                try:
                    kind, name, value = messages.get(timeout=0.5)
                except queue_module.Empty:
                    kind = name = value = None
                if kind == "warning":
                    progress.console.print(f"      [yellow]{name}: {escape(value)}[/]")
                elif kind == "done":
                    seconds[name] = value
                    running.pop(name).join()
                    progress.update(tasks[name], completed=configs[name].num_updates)
                elif kind == "error":
                    raise RlhfkitError(f"PPO run {name!r} failed: {value}")
                for run_name, proc in running.items():
                    progress.update(tasks[run_name], **_progress_from_log(configs[run_name].out))
                    if not proc.is_alive() and messages.empty():
                        raise RlhfkitError(
                            f"PPO run {run_name!r}: its process ended without a result (exit "
                            f"code {proc.exitcode}: out of memory? or, from a script of yours, "
                            "a run_demo call not under `if __name__ == '__main__':`, which "
                            "worker processes re-run; DemoSettings.processes=1 avoids processes)"
                        )
    finally:
        for proc in running.values():
            proc.terminate()
            proc.join()
    return seconds


def _start_run(ctx: Any, name: str, config: Any, threads: int, messages: Any) -> Any:
    """Start one run's process (without a progress bar of its own: the parent draws it)."""
    config = replace(config, progress=False)
    # the trainer would start a fresh log too; removing it first keeps the bar from showing an
    # earlier demo's updates
    (Path(config.out) / "metrics.jsonl").unlink(missing_ok=True)
    proc = ctx.Process(
        target=_ppo_process, args=(name, config, threads, messages, dict(os.environ)), daemon=True
    )
    proc.start()
    return proc


def _progress_from_log(run_dir: str) -> dict[str, Any]:
    """Updates done, reward and KL so far, read from a run's metrics.jsonl (as it is written)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    done = 0
    last: dict[str, Any] = {}
    for line in lines:
        try:
            last = json.loads(line)
        except json.JSONDecodeError:  # the line being written
            continue
        done += 1
    if not done:
        return {}
    return {
        "completed": done,
        "info": f"reward {last.get('objective/scores', float('nan')):.3f}  "
        f"kl {last.get('objective/kl', float('nan')):.3f}",
    }


def _load_reward(config: Any) -> Any:
    from rlhfkit.reward.ensemble import load_reward

    return load_reward(config.reward_model, config.ensemble_objective, config.uwo_lambda)


def _ppo_process(
    name: str, config: Any, threads: int, messages: Any, environ: dict[str, str]
) -> None:
    """One PPO run in a process of its own; its warnings and its end go to ``messages``."""
    import traceback

    try:
        init_worker(threads, environ)
        from rlhfkit.ppo import PPOTrainer
        from rlhfkit.world import gold_reward_fn

        def show(message, category, filename, lineno, file=None, line=None):
            messages.put(("warning", name, str(message)))

        warnings.showwarning = show
        t0 = time.perf_counter()
        PPOTrainer(config, reward_model=_load_reward(config), gold_reward_fn=gold_reward_fn).train()
        messages.put(("done", name, time.perf_counter() - t0))
    except BaseException as e:  # the parent shows it and stops the other runs
        from rlhfkit.errors import RlhfkitError

        detail = str(e) if isinstance(e, RlhfkitError) else traceback.format_exc()
        messages.put(("error", name, detail))
