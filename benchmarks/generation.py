"""Sampling speed: rlhfkit's sampling loop against ``transformers``' ``generate``, and both against
the training FLOP rate of the same model, measured in one process, in turn.

    python benchmarks/generation.py [--threads 1] [--runs 7] [--batch N] [--json FILE]

Two models, both GPT-2 with random weights (so no row stops early and every row samples the full
response): ``large``, the ~20M-parameter policy of ``vs_trl.py``'s MFU figure (6 layers × 512,
batch 32, 32 new tokens after a 5-token prompt), and ``demo``, the size of the demo world's base
policy (3 layers × 96 over its 1,827-word vocabulary, batch 64, 48 new tokens, as the demo's PPO
samples). For each, in turn ``--runs`` times: ``transformers``' ``model.generate`` (plain sampling at
temperature 0.7: what rlhfkit ran before its own loop), rlhfkit's
:func:`rlhfkit.collect.generate.generate` (which packs large layers' weights for oneDNN on an x86
CPU, on an Intel one only a real vocabulary's head, :mod:`rlhfkit.runtime.packing`, and runs a
plain GPT-2 through its lean
decoding step, :mod:`rlhfkit.collect.gpt2_step`), the same loop with every layer of 2^18 weights
and up packed (``rlhfkit_packed``) and with packing switched off (``rlhfkit_unpacked``)
and with the model's own forward every step (``rlhfkit_model_forward``: the sampler before the lean
step), and a training step on half the batch (forward with the
logits of the response positions, backward, AdamW: the work of a PPO minibatch without the critic).
Seconds are medians; FLOPs are counted as ``vs_trl.py`` counts them (``_ppo.generation_flops``,
``_ppo.forward_flops``; backward = 2 × forward). ``gen/train`` is the sampling FLOP rate over the
training FLOP rate: the issue's target is ≥ 0.7 for the ~20M model.

To see a CPU without AVX-512 on one that has it, run with ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` (the header line prints the capability torch
uses and the measured matmul peak).

``--batch N`` samples N rows at once instead of each size's own batch (the training step then
takes N / 2 rows, a PPO minibatch of that rollout batch): how the ratio grows with the rows each
decoding step multiplies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _world  # noqa: E402
from _machine import machine_info, matmul_peak  # noqa: E402
from _ppo import forward_flops, generation_flops  # noqa: E402

SIZES = {
    "large": {"layers": 6, "dim": 512, "heads": 8, "batch": 32, "response": 32},
    "demo": {"layers": 3, "dim": 96, "heads": 4, "batch": 64, "response": 48},
}
TEMPERATURE = 0.7
GENERATORS = (
    "transformers", "rlhfkit", "rlhfkit_packed", "rlhfkit_unpacked", "rlhfkit_model_forward"
)  # fmt: skip


def build(name: str, work: Path, s: dict) -> tuple[Path, list[str]]:
    """The model directory and the prompts of one size (``s``: its row of ``SIZES``)."""
    if name == "large":
        path = _world.build_model(work / name, s["layers"], s["dim"], s["heads"])
        prompts = [
            _world.prompt_text(_world.TOPICS[i % len(_world.TOPICS)]) for i in range(s["batch"])
        ]
        return path, prompts
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhfkit import world

    tok = world.build_world_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=s["dim"], n_layer=s["layers"],
        n_head=s["heads"], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, activation_function="gelu",
    ))  # fmt: skip
    model.save_pretrained(work / name)
    tok.save_pretrained(work / name)
    topics = list(world.TRAIN_TOPICS)
    return work / name, [world.make_prompt(topics[i % len(topics)]) for i in range(s["batch"])]


@contextlib.contextmanager
def every_large_layer() -> Iterator[None]:
    """rlhfkit's packing rule for CPUs not made by Intel (every layer of 2^18 weights and up), on
    any CPU, while the block is open."""
    from rlhfkit.runtime import packing

    own = packing.min_packed_weights
    packing.min_packed_weights = lambda: packing.MIN_PACKED_WEIGHTS
    try:
        yield
    finally:
        packing.min_packed_weights = own


def measure(name: str, work: Path, runs: int, batch: int | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from rlhfkit.collect import gpt2_step
    from rlhfkit.collect.generate import encode_prompts, generate
    from rlhfkit.ops import logprobs_from_logits
    from rlhfkit.runtime import packing

    s = {**SIZES[name], **({"batch": batch} if batch else {})}
    path, prompts = build(name, work, s)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    pad, eos, R = tok.pad_token_id, tok.eos_token_id, s["response"]
    ids, mask = encode_prompts(tok, prompts, pad)  # (B, P)
    P = ids.shape[1]
    config = GenerationConfig(
        do_sample=True, temperature=TEMPERATURE, top_k=0, top_p=1.0, max_new_tokens=R,
        min_new_tokens=0, pad_token_id=pad, eos_token_id=[eos], use_cache=True,
    )  # fmt: skip
    model.generation_config = GenerationConfig()

    def transformers_generate() -> int:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        return out.shape[1] - P

    def rlhfkit_generate() -> int:
        out = generate(model, ids, mask, R, TEMPERATURE, pad, [eos])
        return int((out != pad).any(0).sum())

    def switched_off(env: str) -> Callable[[], int]:
        """The same loop with one of its speed-ups switched off by its variable."""

        def run() -> int:
            saved = os.environ.get(env)
            os.environ[env] = "0"
            try:
                return rlhfkit_generate()
            finally:
                if saved is None:
                    del os.environ[env]
                else:
                    os.environ[env] = saved

        return run

    def every_large_layer_packed() -> int:
        """The loop with every layer of 2^18 weights and up packed, whoever made the CPU (on an
        Intel CPU rlhfkit packs only a real vocabulary's head)."""
        with every_large_layer():
            return rlhfkit_generate()

    # a PPO minibatch's training work on the policy: half the batch, prompt + full response
    train_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(train_model.parameters(), lr=1e-5)
    half = s["batch"] // 2
    seq = torch.cat([ids[:half], torch.randint(4, len(tok), (half, R))], 1)  # (b, P + R)
    seq_mask = torch.cat([mask[:half], torch.ones(half, R, dtype=mask.dtype)], 1)
    positions = (seq_mask.cumsum(-1) - 1).clamp(min=0)

    def train_step() -> int:
        logits = train_model(
            input_ids=seq, attention_mask=seq_mask, position_ids=positions, logits_to_keep=R + 1
        ).logits  # (b, R + 1, V)
        loss = -logprobs_from_logits(logits[:, :-1], seq[:, P:], TEMPERATURE).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return R

    sides = {
        "transformers": transformers_generate,
        "rlhfkit": rlhfkit_generate,
        "rlhfkit_packed": every_large_layer_packed,
        "rlhfkit_unpacked": switched_off(packing.ENV),  # every layer's own forward
        "rlhfkit_model_forward": switched_off(gpt2_step.ENV),  # the model's forward every step
        "train": train_step,
    }
    seconds: dict[str, list[float]] = {k: [] for k in sides}
    new_tokens: dict[str, int] = {}
    for run in range(runs + 1):  # the first round warms up
        for side, fn in sides.items():
            torch.manual_seed(run)
            t0 = time.perf_counter()
            new_tokens[side] = fn()
            if run:
                seconds[side].append(time.perf_counter() - t0)
    p = _world.count_params(path)
    gen_flops = s["batch"] * generation_flops(p, P, R)
    train_flops = half * 3 * forward_flops(p, P + R, R + 1)
    out = {"model": name, "params": p["total"], **s, "prompt_length": P, "runs": runs}
    for side in sides:
        sec = statistics.median(seconds[side])
        flops = train_flops if side == "train" else gen_flops
        out[side] = {
            "seconds": sec,
            "seconds_min_max": [min(seconds[side]), max(seconds[side])],
            "gflops": flops / sec / 1e9,
            "new_tokens": new_tokens[side],
        }
    for side in GENERATORS:
        out[side]["gen_over_train"] = out[side]["gflops"] / out["train"]["gflops"]
        assert new_tokens[side] == R, f"{side} stopped after {new_tokens[side]} of {R} tokens"
    out["speedup"] = out["transformers"]["seconds"] / out["rlhfkit"]["seconds"]
    out["packing_speedup"] = out["rlhfkit_unpacked"]["seconds"] / out["rlhfkit_packed"]["seconds"]
    with packing.packed_linears(model, rows=s["batch"]) as n_packed:
        out["packed_by_default"] = n_packed
    out["gpt2_step_speedup"] = out["rlhfkit_model_forward"]["seconds"] / out["rlhfkit"]["seconds"]
    with every_large_layer(), packing.packed_linears(model, rows=s["batch"]) as n_packed:
        out["packed_layers"] = n_packed
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--runs", type=int, default=7, help="timed rounds of each side (default 7)")
    ap.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    ap.add_argument(
        "--batch", type=int, metavar="N", help="rows sampled at once (default: each size's own)"
    )
    ap.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    args = ap.parse_args()
    if args.batch is not None and args.batch < 2:
        ap.error("--batch must be at least 2 (the training step takes half of it)")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    info = machine_info()
    peak = matmul_peak()
    print(
        f"{info['cpu']}, {info['cpu_capability']}, {args.threads} thread(s), load "
        f"{info['load_average']}; fp32 matmul peak {peak['gflops']:.1f} GFLOP/s"
    )
    results = {"machine": info, "matmul_peak": peak, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes:
            r = measure(name, Path(tmp), args.runs, args.batch)
            results["sizes"].append(r)
            print(
                f"{name} ({r['params'] / 1e6:.2f}M, batch {r['batch']}, {r['response']} new "
                f"tokens): train {r['train']['gflops']:.1f} GFLOP/s"
            )
            for side in GENERATORS:
                x = r[side]
                print(
                    f"  {side:21s} {x['seconds']:.3f} s  {x['gflops']:6.1f} GFLOP/s  "
                    f"{x['gflops'] / peak['gflops']:.1%} of peak  gen/train {x['gen_over_train']:.2f}"
                )
            print(
                f"  speedup {r['speedup']:.2f}x over transformers; oneDNN-packed weights "
                f"({r['packed_layers']} layers) {r['packing_speedup']:.2f}x (rlhfkit packs "
                f"{r['packed_by_default']} of them by default on this CPU); GPT-2's lean step "
                f"{r['gpt2_step_speedup']:.2f}x"
            )
    results["load_average_end"] = machine_info()["load_average"]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
