"""GPT-2's lean decoding step (rlhfkit.collect.gpt2_step): the model's own logits bit for bit, the
same samples for a seed, taken only where it is exactly the model's forward."""

from __future__ import annotations

import pytest
import torch

import rlhfkit.collect.generate as gen
from rlhfkit.collect import gpt2_step
from rlhfkit.collect.generate import generate, left_pad, position_ids_from_mask
from rlhfkit.collect.gpt2_step import GPT2DecodeStep, decode_step, matches_forward


def _gpt2(seed: int = 0, **kw):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = dict(vocab_size=61, n_positions=96, n_embd=32, n_layer=2, n_head=2) | kw
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(**cfg)).eval()


def _prompts(seed: int, rows: int, vocab: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts of 1 to 9 tokens (never the pad id)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 10, (rows,), generator=g).tolist()
    seqs = [(torch.randint(1, vocab, (n,), generator=g)).tolist() for n in lengths]
    return left_pad(seqs, pad)


CONFIGS = {
    "gelu_new": {},
    "gelu, 4 heads, scaled by layer": dict(
        n_layer=3,
        n_embd=48,
        n_head=4,
        activation_function="gelu",
        scale_attn_by_inverse_layer_idx=True,
    ),
    "one layer, one head": dict(n_layer=1, n_embd=16, n_head=1),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_lean_step_gives_the_models_logits_bit_for_bit(name):
    """Over a left-padded batch, its prefill and 30 decoding steps give exactly the logits of the
    model's forward through its own cache."""
    model = _gpt2(**CONFIGS[name])
    ids, mask = _prompts(1, 6, model.config.vocab_size, pad=0)
    lean, full = GPT2DecodeStep(model), gen._ModelStep(model)
    positions = position_ids_from_mask(mask)
    with torch.no_grad():
        a, b = lean(ids, mask, positions), full(ids, mask, positions)
        for t in range(30):
            assert torch.equal(a, b), f"step {t}"
            token = torch.multinomial(torch.softmax(a, -1), 1)
            mask = torch.cat([mask, torch.ones_like(token)], 1)
            nxt = positions[:, -1:] + 1 + t
            a, b = lean(token, mask, nxt), full(token, mask, nxt)
        assert torch.equal(a, b)
        # a prompt fed in two chunks: 4 new tokens after 8 cached ones, padded and not
        g = torch.Generator().manual_seed(2)
        for chunk_mask in (mask[:, :12], torch.ones(2, 12, dtype=torch.long)):
            chunk_ids = torch.randint(1, model.config.vocab_size, chunk_mask.shape, generator=g)
            p = position_ids_from_mask(chunk_mask)
            lean, full = GPT2DecodeStep(model), gen._ModelStep(model)
            for cols in (slice(0, 8), slice(8, 12)):
                args = (chunk_ids[:, cols], chunk_mask[:, : cols.stop], p[:, cols])
                assert torch.equal(lean(*args), full(*args))


@pytest.mark.parametrize("padded", [True, False])
def test_generate_samples_the_same_with_and_without_it(padded, monkeypatch):
    """The sampler's own samples for a seed, with the lean step (which it then takes) and with the
    model's forward (``RLHFKIT_GPT2_STEP=0``); also for PPO's policy, in train mode with dropout
    off."""
    from rlhfkit.loading import disable_dropout, fuse_activations

    model = _gpt2(seed=2, n_layer=3, n_embd=48, n_head=4)
    ids, mask = _prompts(3, 12, model.config.vocab_size, pad=0)
    if not padded:
        ids, mask = ids[:, -1:].clone(), mask[:, -1:].clone()
        ids[ids == 0] = 5
        mask[:] = 1
    taken = []
    monkeypatch.setattr(
        gen,
        "decode_step",
        lambda m, ref, **kw: taken.append(decode_step(m, ref, **kw)) or taken[-1],
    )

    def sample(on: bool) -> torch.Tensor:
        monkeypatch.setenv(gpt2_step.ENV, "1" if on else "0")
        torch.manual_seed(7)
        return generate(model, ids, mask, 24, 0.9, pad_id=0, stop_ids=[1])

    for prepare in (lambda m: m, lambda m: (disable_dropout(m), fuse_activations(m), m.train())):
        prepare(model)
        lean, plain = sample(True), sample(False)
        assert isinstance(taken[-2], GPT2DecodeStep)
        assert not isinstance(taken[-1], GPT2DecodeStep)
        assert torch.equal(lean, plain)


def test_the_demo_policy_takes_it():
    """The shipped seed-0 base policy of the demo world is what the step is for."""
    from transformers import AutoModelForCausalLM

    from rlhfkit.world.policy import BaseBuildSettings, shipped_policy_dir

    model = AutoModelForCausalLM.from_pretrained(shipped_policy_dir(BaseBuildSettings(seed=0)))
    assert isinstance(decode_step(model.eval(), gen._ModelStep), GPT2DecodeStep)


def test_other_models_and_settings_keep_the_models_forward(tiny_models, monkeypatch):
    """Eager attention, dropout that acts, cross-attention, another architecture, or the switch
    off: the model's own forward."""
    from transformers import AutoModelForCausalLM

    def takes_it(model) -> bool:
        return isinstance(decode_step(model, gen._ModelStep), GPT2DecodeStep)

    assert takes_it(_gpt2())
    eager = _gpt2()
    eager.config._attn_implementation = "eager"
    assert not takes_it(eager)
    assert not takes_it(_gpt2(resid_pdrop=0.1).train())
    assert takes_it(_gpt2(resid_pdrop=0.1).eval())
    assert not takes_it(_gpt2(add_cross_attention=True))
    hooked = _gpt2()  # as Accelerate's device_map leaves a model: hooks on its modules
    hooked.transformer.h[0]._hf_hook = object()
    assert not takes_it(hooked)
    assert not takes_it(AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).eval())
    monkeypatch.setenv(gpt2_step.ENV, "0")
    assert not takes_it(_gpt2())


def _refused_and_sampled_by_the_model(model, monkeypatch) -> None:
    """The lean step (as patched by the test) fails its check, and the sampler's samples are the
    model's forward's (the switch off) for the same seed."""
    assert not matches_forward(model, gen._ModelStep)
    assert not isinstance(decode_step(model, gen._ModelStep), GPT2DecodeStep)
    ids, mask = _prompts(5, 4, model.config.vocab_size, pad=0)
    samples = []
    for switch in ("1", "0"):
        monkeypatch.setenv(gpt2_step.ENV, switch)
        torch.manual_seed(1)
        samples.append(generate(model, ids, mask, 12, 1.0, pad_id=0, stop_ids=[1]))
    assert torch.equal(*samples)


def test_a_step_that_differs_from_the_model_is_not_taken(monkeypatch):
    """The check on first use is what keeps the samples: a lean step off by one rounding step on
    one logit is refused, and the sampler runs the model's forward."""
    real = GPT2DecodeStep.__call__

    def off_by_a_rounding(self, *args):
        logits = real(self, *args)
        logits[0, 0] = torch.nextafter(logits[0, 0], torch.tensor(float("inf")))
        return logits

    monkeypatch.setattr(GPT2DecodeStep, "__call__", off_by_a_rounding)
    _refused_and_sampled_by_the_model(_gpt2(seed=4), monkeypatch)


def test_a_step_that_fails_is_not_taken(monkeypatch):
    """Whatever goes wrong inside the lean step on its check (a device it did not expect, a future
    GPT-2 it cannot run), the sampler runs the model's forward instead of failing."""

    def fails(self, *args):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(GPT2DecodeStep, "__call__", fails)
    _refused_and_sampled_by_the_model(_gpt2(seed=5), monkeypatch)
