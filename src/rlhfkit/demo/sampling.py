"""Sampling the world's policies for the demo, chunk by chunk, in this process or in worker
processes that every stage reuses; and the held-out KL of a tuned policy from the base policy."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SAMPLE_CHUNK = 256
"""Prompts per sampling task. Each chunk has its own seed, so the samples are the same however many
processes share the work."""


class Sampler:
    """Samples responses from the world's policies (no top-k/top-p), chunk by chunk: in ``processes``
    worker processes (:func:`worker_context`), started on first use and reused by every stage, or
    in this process."""

    def __init__(self, processes: int, threads: int) -> None:
        self.processes = processes
        self.threads = threads
        self._pool: Any = None

    def __call__(
        self, model_dir: Path, prompts: Sequence[str], max_new_tokens: int, seed: int,
        temperature: float,
    ) -> tuple[list[str], list[bool]]:  # fmt: skip
        """One response per prompt, and whether it ended with EOS."""
        texts, ended, _ids = self.with_ids(model_dir, prompts, max_new_tokens, seed, temperature)
        return texts, ended

    def with_ids(
        self, model_dir: Path, prompts: Sequence[str], max_new_tokens: int, seed: int,
        temperature: float,
    ) -> tuple[list[str], list[bool], list[list[int]]]:  # fmt: skip
        """The same, with each response's token ids (through its EOS)."""
        tasks = [
            (str(model_dir), list(prompts[i : i + SAMPLE_CHUNK]), max_new_tokens,
             seed * 1_000_003 + i // SAMPLE_CHUNK, temperature)
            for i in range(0, len(prompts), SAMPLE_CHUNK)
        ]  # fmt: skip
        if self.processes > 1:
            results = list(self._workers().map(_sample_chunk, *zip(*tasks, strict=True)))
        else:
            results = [_sample_chunk(*task) for task in tasks]
        texts = [t for chunk, _, _ in results for t in chunk]
        ended = [e for _, chunk, _ in results for e in chunk]
        ids = [i for _, _, chunk in results for i in chunk]
        return texts, ended, ids

    def _workers(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=worker_context(),
                initializer=init_worker, initargs=(self.threads, dict(os.environ)),
            )  # fmt: skip
        return self._pool

    def close(self) -> None:
        _LOADED.clear()  # a later demo may retrain a policy in the same directory
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


WORKER_PRELOAD = [
    "torch", "transformers", "transformers.models.gpt2.modeling_gpt2", "accelerate",
    "rlhfkit.demo.sampling", "rlhfkit.demo.ppo_runs",
    "rlhfkit.ppo", "rlhfkit.reward", "rlhfkit.world", "rlhfkit.demo.forkserver_exit",
]  # fmt: skip
"""What the fork server imports once for every worker (about 4 s of one core's time each); the
last one makes the server's own exit quick (:mod:`rlhfkit.demo.forkserver_exit`)."""


def worker_context() -> Any:
    """The start method of the demo's worker processes (the sampling workers, the PPO runs side
    by side): a fork server where the platform has one, else spawn.

    The fork server is a clean process that imports torch, transformers and the trainer
    (:data:`WORKER_PRELOAD`) once; every worker is a fork of it, so a worker starts without
    importing them again. It never runs a tensor operation, so no worker inherits a thread pool
    (what makes a plain fork of the demo's own process unsafe). It keeps the environment it
    started with: workers take the demo's current one in :func:`init_worker`."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


def start_worker_server() -> None:
    """Start the fork server now (where workers are its forks), so that it imports torch,
    transformers and the trainer while this process does the same, on another core, instead
    of when the first worker is needed."""
    context = worker_context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def init_worker(threads: int, environ: dict[str, str] | None = None) -> None:
    """Set up a worker process: the demo's environment (``environ``, for a worker forked from a
    server started earlier), ``threads`` torch threads, no progress bars."""
    import atexit
    import gc

    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)

    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # "Loading weights" bars would cut into the demo's output
    # the worker's exit without the cycle collector's walk over torch's objects (about a second,
    # which the demo would wait for): see rlhfkit.cli.run
    atexit.register(gc.freeze)


_LOADED: dict[str, tuple[Any, Any]] = {}
"""Policies loaded by this process for sampling, by directory (a run's policy is sampled once per
stage, the base policy by several stages)."""


def _sample_chunk(
    model_dir: str, prompts: list[str], max_new_tokens: int, seed: int, temperature: float
) -> tuple[list[str], list[bool], list[list[int]]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.world.policy import generate_responses

    if model_dir not in _LOADED:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        _LOADED[model_dir] = (model, tokenizer)
    model, tokenizer = _LOADED[model_dir]
    return generate_responses(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
        seed=seed, return_ids=True,
    )  # fmt: skip


def heldout_kl(
    policy_dir: Path, base_dir: Path, prompts: Sequence[str], response_ids: Sequence[Sequence[int]],
    temperature: float,
) -> float:  # fmt: skip
    """Mean over the policy's own samples of ``log π − log π_base`` summed over each response: the
    k1 estimate of ``KL(π ‖ π_base)`` per response (docs/metrics.md), on the responses that proxy
    and gold are measured on. Per-response KL is heavy-tailed (a few responses the base finds very
    unlikely), so this mean over all the held-out responses is steadier than a training batch's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.world.policy import response_logprobs

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    logprobs = []
    for model_dir in (policy_dir, base_dir):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        logprobs.append(response_logprobs(model, tokenizer, prompts, response_ids, temperature))
    return float(statistics.fmean([p - b for p, b in zip(*logprobs, strict=True)]))
