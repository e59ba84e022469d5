"""oneDNN-packed weights while sampling (rlhfkit.runtime.packing): the same numbers as each layer's
own forward, only large fp32 layers, always restored, and the sampler's samples unchanged."""

from __future__ import annotations

import contextlib
import platform

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from rlhfkit.runtime import packing
from rlhfkit.runtime.packing import min_packed_weights, packed_linears, packing_available

X86 = platform.machine().lower() in ("x86_64", "amd64")
needs_packing = pytest.mark.skipif(
    not packing_available(), reason="packing needs an x86-64 CPU and torch built with oneDNN"
)


@pytest.fixture(autouse=True)
def _every_large_layer(monkeypatch):
    """Layers of 2^18 weights and up packed whoever made the CPU (on an Intel one rlhfkit packs
    only a real vocabulary's head): the tests below pack 512-wide layers."""
    monkeypatch.setattr(packing, "min_packed_weights", lambda: packing.MIN_PACKED_WEIGHTS)


@pytest.mark.parametrize(
    ("vendor", "least"),
    [("GenuineIntel", 1 << 24), ("AuthenticAMD", 1 << 18), ("HygonGenuine", 1 << 18)],
)
def test_on_an_intel_cpu_only_a_vocabularys_head_is_packed(vendor, least, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nmodel name\t: a CPU\n")
    assert min_packed_weights(str(cpuinfo)) == least  # the real one (the fixture replaces it)
    assert min_packed_weights(str(tmp_path / "missing")) == packing.MIN_PACKED_WEIGHTS
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(packing, "min_packed_weights", lambda: min_packed_weights(str(cpuinfo)))
        heads = torch.nn.ModuleDict({
            "gpt2_head": torch.nn.Linear(768, 50257, bias=False),  # 38.6M weights
            "mlp": torch.nn.Linear(512, 2048),
        })  # fmt: skip
        with packed_linears(heads, rows=8) as n:
            assert n == (1 if least > 1 << 18 else 2) or not packing_available()
            assert ("forward" in heads["mlp"].__dict__) is (least == 1 << 18 and n > 0)


def test_packing_is_available_on_this_kind_of_machine():
    """CI's machines are x86-64 Linux with torch's oneDNN: the tests below must not skip there."""
    if X86:
        assert packing_available()


def _layers() -> torch.nn.ModuleDict:
    torch.manual_seed(0)
    return torch.nn.ModuleDict({
        "linear": torch.nn.Linear(512, 768),
        "head": torch.nn.Linear(512, 1024, bias=False),
        "conv1d": Conv1D(512, 1024),  # GPT-2's layer: weight (in, out) = (1024, 512)
        "small": torch.nn.Linear(64, 64),  # under MIN_PACKED_WEIGHTS
    })  # fmt: skip


@needs_packing
def test_packed_layers_compute_what_their_own_forward_does():
    layers = _layers()
    inputs = {"linear": (32, 512), "head": (4, 5, 512), "conv1d": (3, 1024), "small": (8, 64)}
    xs = {k: torch.randn(*shape) for k, shape in inputs.items()}
    with torch.no_grad():
        plain = {k: layers[k](x) for k, x in xs.items()}
        with packed_linears(layers, rows=32) as n:
            assert n == 3
            assert {k for k, m in layers.items() if "forward" in m.__dict__} == {
                "linear", "head", "conv1d"
            }  # fmt: skip
            packed = {k: layers[k](x) for k, x in xs.items()}
    for k in xs:
        assert packed[k].shape == plain[k].shape
        torch.testing.assert_close(packed[k], plain[k], atol=1e-5, rtol=1e-5)
    assert torch.equal(packed["small"], plain["small"])  # not packed: its own forward
    assert not any("forward" in m.__dict__ for m in layers.values())


@needs_packing
def test_a_forward_with_gradients_or_another_dtype_runs_the_layer_itself():
    """Inside the block a training forward stays exact and differentiable, and a bf16 input or
    autocast takes the layer's own path (the packed copy is fp32)."""
    layer = torch.nn.Linear(512, 512)
    x = torch.randn(6, 512)
    expected = layer(x)
    with packed_linears(layer, rows=6) as n:
        assert n == 1
        with torch.enable_grad():
            y = layer(x)
        assert torch.equal(y, expected) and y.requires_grad
        y.sum().backward()
        assert layer.weight.grad is not None
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(x.bfloat16()).dtype == torch.bfloat16
            assert layer(x).dtype == torch.bfloat16  # autocast's own cast, not the fp32 copy


@needs_packing
def test_every_layer_gets_its_own_forward_back_when_the_block_fails():
    layers = _layers()
    with pytest.raises(RuntimeError, match="boom"), packed_linears(layers):
        assert "forward" in layers["linear"].__dict__
        raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in layers.values())


@needs_packing
def test_layers_that_are_not_plain_fp32_cpu_linears_are_left_alone():
    class Quantized(torch.nn.Linear):  # a subclass (bitsandbytes' layers are): its own math
        pass

    def hooked(x):  # a forward somebody else set (Accelerate's hooks do)
        return x

    own = torch.nn.Linear(512, 512)
    own.forward = hooked
    layers = torch.nn.ModuleDict({
        "bf16": torch.nn.Linear(512, 512).to(torch.bfloat16),
        "subclass": Quantized(512, 512),
        "own_forward": own,
    })  # fmt: skip
    with packed_linears(layers) as n:
        assert n == 0
    assert layers["own_forward"].forward is hooked
    assert not any("forward" in m.__dict__ for k, m in layers.items() if k != "own_forward")


def test_packing_can_be_switched_off_and_stays_off_elsewhere(monkeypatch):
    layers = _layers()
    monkeypatch.setenv(packing.ENV, "0")
    assert not packing_available()
    with packed_linears(layers) as n:
        assert n == 0
    monkeypatch.setenv(packing.ENV, "1")
    monkeypatch.setattr(packing.platform, "machine", lambda: "arm64")
    assert not packing_available()
    with packed_linears(layers) as n:
        assert n == 0
    assert not any("forward" in m.__dict__ for m in layers.values())


@needs_packing
def test_sampling_with_packed_weights_draws_the_same_samples(tiny_lm, monkeypatch):
    """A GPT-2 of width 512 (its four block layers packed, its small head not): the same seed draws
    the same tokens with packing on and off, from distributions within 1e-5 of each other."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import rlhfkit.collect.generate as gen
    from rlhfkit.loading import choose_pad_id
    from rlhfkit.rollout import encode_prompts, generate

    path = tiny_lm(n_layer=1, n_embd=512)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    pad = choose_pad_id(tok)
    ids, mask = encode_prompts(tok, ["the cat sat on", "a dog", "big"] * 8, pad)
    packed_counts: list[int] = []
    steps: list[torch.Tensor] = []

    @contextlib.contextmanager
    def counting(model, rows=None):
        with packed_linears(model, rows) as n:
            packed_counts.append(n)
            yield n

    def recording(logits, temperature, top_k=0, top_p=1.0):
        steps.append(torch.log_softmax(logits.float() / temperature, -1))
        return sample_next(logits, temperature, top_k, top_p)

    sample_next = gen.sample_next
    monkeypatch.setattr(gen, "packed_linears", counting)
    monkeypatch.setattr(gen, "sample_next", recording)
    runs = {}
    for setting in ("1", "0"):
        monkeypatch.setenv(packing.ENV, setting)
        steps.clear()
        torch.manual_seed(5)
        out = generate(model, ids, mask, 16, 0.7, pad, [tok.eos_token_id])
        runs[setting] = (out, torch.stack(steps, 1))
    assert packed_counts == [4, 0]
    assert torch.equal(runs["1"][0], runs["0"][0])
    assert (runs["1"][1] - runs["0"][1]).abs().max() < 1e-5
    assert not any("forward" in m.__dict__ for m in model.modules())


@needs_packing
def test_a_loop_over_batches_packs_once(tiny_lm, monkeypatch):
    """``sample_responses`` over three batches packs the four layers once, not per batch (the
    inner ``generate`` finds them packed), and samples what it samples with packing off."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.collect.generate import sample_responses

    path = tiny_lm(n_layer=1, n_embd=512)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    packs = []
    real = packing._packed_forward

    def counting(module, *args):
        packs.append(module)
        return real(module, *args)

    monkeypatch.setattr(packing, "_packed_forward", counting)
    prompts = ["the cat sat on", "a dog", "big"] * 4
    on = sample_responses(model, tok, prompts, max_new_tokens=8, batch_size=4, seed=2)
    assert len(packs) == 4 == len(set(map(id, packs)))
    monkeypatch.setenv(packing.ENV, "0")
    off = sample_responses(model, tok, prompts, max_new_tokens=8, batch_size=4, seed=2)
    assert len(packs) == 4 and on == off
    assert not any("forward" in m.__dict__ for m in model.modules())


@needs_packing
def test_lora_base_layers_are_packed_and_the_adapters_still_count(tiny_lm, monkeypatch):
    """PPO with LoRA samples through PEFT's wrappers: the frozen base layers (GPT-2's ``Conv1D``)
    are packed, the small adapters are not, and the samples are those of the unpacked model, with
    adapters that are not zero (so a packed layer that dropped them would sample differently)."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.loading import choose_pad_id, with_lora_adapters
    from rlhfkit.rollout import encode_prompts, generate

    path = tiny_lm(n_layer=1, n_embd=512)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model = with_lora_adapters(model, LoraConfig(r=4, target_modules=["c_attn", "c_fc"])).eval()
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    pad = choose_pad_id(tok)
    ids, mask = encode_prompts(tok, ["the cat sat on", "a dog", "big"] * 4, pad)
    with packed_linears(model, rows=12) as n:
        assert n == 4
    out = {}
    for setting in ("1", "0"):
        monkeypatch.setenv(packing.ENV, setting)
        torch.manual_seed(7)
        out[setting] = generate(model, ids, mask, 12, 0.7, pad, [tok.eos_token_id])
    assert torch.equal(out["1"], out["0"])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        with packed_linears(model, rows=12):
            packed = model(input_ids=ids, attention_mask=mask).logits
        with model.disable_adapter():
            base = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(packed, full, atol=1e-5, rtol=1e-5)
    assert (full - base).abs().max() > 1e-2  # the adapters change the logits


@needs_packing
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_models_people_bring_sample_the_same_packed(arch, tiny_models, monkeypatch):
    """``nn.Linear`` models (Llama: no biases, grouped-query attention; Qwen2: biased q/k/v) at a
    width whose layers are packed: the same samples with packing on and off, and every layer of
    2^18 weights or more packed (head, MLP, q/o; k/v of 512 × 128 stay plain)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.loading import choose_pad_id, stop_token_ids
    from rlhfkit.rollout import encode_prompts, generate

    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    config = AutoConfig.from_pretrained(tiny_models[arch])
    config.update({
        "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 1,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
    })  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    stops = stop_token_ids(tok, model)
    pad = choose_pad_id(tok, stops, model.get_input_embeddings().weight.shape[0])
    ids, mask = encode_prompts(tok, ["the cat sat on the mat", "a dog", "hello"] * 4, pad)
    expected = sum(
        type(m) is torch.nn.Linear and m.weight.numel() >= packing.MIN_PACKED_WEIGHTS
        for m in model.modules()
    )
    with packed_linears(model, rows=12) as n:
        assert n == expected >= 5  # q, o, gate, up, down (+ the head over a large vocabulary)
    out = {}
    for setting in ("1", "0"):
        monkeypatch.setenv(packing.ENV, setting)
        torch.manual_seed(3)
        out[setting] = generate(model, ids, mask, 16, 0.8, pad, stops)
    assert torch.equal(out["1"], out["0"])


@needs_packing
@pytest.mark.parametrize("lora_r", [0, 4])
def test_ppo_with_a_packed_policy_runs_as_it_does_unpacked(lora_r, tiny_lm, tmp_path, monkeypatch):
    """PPO end to end on a policy whose layers are packed while it samples (a 512-wide GPT-2,
    with and without LoRA): every logged figure of every update is the one the unpacked run logs,
    and the policy it saves is the same."""
    import json

    from rlhfkit.ppo import PPOConfig, PPOTrainer

    policy = tiny_lm(n_layer=1, n_embd=512)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["tell me about cats", "a dog", "the cat sat"] * 8) + "\n")
    reward = tmp_path / "reward.py"
    reward.write_text(
        "def reward(prompts, responses):\n"
        "    return [r.split().count('cat') - 0.1 * len(r.split()) for r in responses]\n"
    )
    packs = []
    real = packing._packed_forward
    monkeypatch.setattr(packing, "_packed_forward", lambda m, *a: packs.append(m) or real(m, *a))
    runs = {}
    for setting in ("1", "0"):
        monkeypatch.setenv(packing.ENV, setting)
        out = tmp_path / f"run{setting}"
        PPOTrainer(PPOConfig(
            policy=str(policy), prompts=str(prompts), out=str(out), reward_fn=f"{reward}:reward",
            total_episodes=48, batch_size=16, response_length=8, seed=1, lora_r=lora_r,
            progress=False,
        )).train()  # fmt: skip
        runs[setting] = [
            {k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (out / "metrics.jsonl").read_text().splitlines()
        ]
    assert len(packs) == 3 * 4  # four layers, packed once per update's sampling
    assert runs["1"] == runs["0"] and len(runs["1"]) == 3
