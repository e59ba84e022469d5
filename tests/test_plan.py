"""``rlhfkit plan``: parameter counts from configs alone (checked against real models, PEFT, and
the published sizes of Qwen2.5-0.5B and Llama-2-7B), the arithmetic of sharding, and clear errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rlhfkit.errors import ConfigError
from rlhfkit.runtime.plan import PlanInput, plan_memory, read_shape
from rlhfkit.tiny import build_tiny_model

CONFIGS = Path(__file__).parent.parent / "benchmarks" / "configs"


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return build_tiny_model(
        "llama", tmp_path_factory.mktemp("plan") / "llama", hidden_size=64, num_layers=3,
        num_heads=4, num_kv_heads=2, intermediate_size=96, vocab_size=512,
    )  # fmt: skip


def plan_cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """``rlhfkit plan ARGS`` in this process (the models' imports are already paid for)."""
    from rlhfkit.cli import main

    try:
        code = main(["plan", *args])
    except SystemExit as e:  # tyro exits with 2 on options that fail their checks
        code = e.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_parameters_are_counted_from_the_config_as_the_real_models_have_them(llama):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhfkit.loading import with_lora_adapters

    real = AutoModelForCausalLM.from_pretrained(llama)
    shape = read_shape(str(llama), "--model", lora_r=4)
    assert shape.params == sum(p.numel() for p in real.parameters())
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.vocab) == (
        3,
        64,
        4,
        2,
        512,
    )
    # the blocks hold everything but the (tied) embedding and the final norm
    assert shape.embedding_params == 512 * 64 + 64
    lora = with_lora_adapters(real, LoraConfig(r=4, task_type="CAUSAL_LM"))
    assert shape.lora_params == sum(p.numel() for p in lora.parameters() if p.requires_grad)
    rm = AutoModelForSequenceClassification.from_pretrained(llama, num_labels=1)
    assert read_shape(str(llama), "--model", head="score").params == sum(
        p.numel() for p in rm.parameters()
    )


@pytest.mark.parametrize(
    "name, params", [("qwen2.5-0.5b.json", 494_032_768), ("llama-2-7b.json", 6_738_415_616)]
)
def test_published_model_sizes_from_their_config_files(name, params):
    assert read_shape(str(CONFIGS / name), "--model").params == params


def test_fsdp_divides_weights_gradients_and_optimizer_by_the_processes(llama):
    policy = read_shape(str(llama), "--model")
    rm = read_shape(str(llama), "--model", head="score")
    P, R, h = policy.params, rm.params, policy.hidden
    one = plan_memory(PlanInput(policy, rm, processes=4, fsdp=False, critic="head"))
    four = plan_memory(PlanInput(policy, rm, processes=4, fsdp=True, critic="head"))
    c = one.components
    assert (c["policy"], c["reference"], c["reward_model"], c["critic"]) == (
        4 * P,
        4 * P,
        4 * R,
        4 * (h + 1),
    )
    assert c["gradients"] == 4 * (P + h + 1) and c["optimizer"] == 2 * c["gradients"]
    f = four.components
    assert f["policy"] == 4 * math.ceil(P / 4) and f["reward_model"] == 4 * math.ceil(R / 4)
    assert f["optimizer"] == 2 * 4 * math.ceil((P + h + 1) / 4)
    # a rollout holds the whole policy under FSDP (gathered once) and its KV cache either way:
    # keys and values × layers × 16 rows × (128 + 32) tokens × 2 kv heads × 16 dims × 4 bytes
    kv = 2 * 3 * 16 * 160 * 2 * 16 * 4
    assert c["generation"] == kv + 16 * 512 * 4
    assert f["generation"] == kv + 16 * 512 * 4 + 4 * P - f["policy"]
    assert four.moments["train"] < one.moments["train"]
    # activations do not depend on sharding; they scale with the micro-batch
    assert f["activations"] == c["activations"]
    half = plan_memory(PlanInput(policy, rm, processes=4, num_mini_batches=2, critic="head"))
    assert half.components["activations"] * 2 == c["activations"]


def test_loading_holds_two_whole_policies_on_a_cpu_and_one_on_a_gpu(llama):
    policy = read_shape(str(llama), "--model")
    rm = read_shape(str(llama), "--model", head="score")
    gpu = plan_memory(PlanInput(policy, rm, processes=2, fsdp=True))
    cpu = plan_memory(PlanInput(policy, rm, processes=2, fsdp=True, device="cpu"))
    sharded = gpu.components["reward_model"]
    assert cpu.moments["load"] == 2 * 4 * policy.params + sharded
    assert gpu.moments["load"] == 4 * policy.params + gpu.components["reference"] + sharded
    assert any("host memory per process at load" in n for n in gpu.notes)


def test_lora_keeps_no_reference_and_trains_only_adapters(llama):
    policy = read_shape(str(llama), "--model", lora_r=8)
    plan = plan_memory(PlanInput(policy, None, critic="head"))
    assert plan.components["reference"] == 0 and plan.components["reward_model"] == 0
    assert plan.components["gradients"] == 4 * (policy.lora_params + policy.hidden + 1)


def test_plan_cli_table_and_json(llama, capsys):
    table = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "plan", "--model", str(llama), "--processes", "2",
         "--fsdp", "--lora-r", "4"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "FSDP over 2 process(es)" in table.stdout and "peak" in table.stdout
    doc = plan_cli(capsys, "--model", str(llama), "--processes", "2", "--fsdp", "--json")
    assert doc.returncode == 0, doc.stderr
    data = json.loads(doc.stdout)
    assert set(data["bytes_per_device"]) >= {
        "policy", "reference", "critic", "reward_model", "optimizer", "gradients", "activations",
    }  # fmt: skip
    assert data["peak_bytes"] == max(data["moments"].values())
    assert data["input"]["processes"] == 2 and data["input"]["fsdp"] is True
    rm = plan_cli(capsys, "--model", str(llama), "--stage", "train-rm", "--json")
    assert rm.returncode == 0 and "rollout" not in json.loads(rm.stdout)["moments"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "--model /nonexistent/model"),
        (["--processes", "0"], "--processes must be ≥ 1"),
        (["--model", "/etc/hostname"], "--model /etc/hostname"),
        (
            ["--processes", "3", "--batch-size", "64"],
            "--batch-size 64 is not divisible by --processes 3",
        ),
        (["--stage", "train-rm", "--lora-r", "4"], "--lora-r applies to --stage ppo only"),
        (["--reward-model", "/nonexistent/rm"], "--reward-model /nonexistent/rm"),
    ],
)
def test_bad_input_is_a_clear_error(llama, args, message, capsys):
    argv = args if args[0] == "--model" else ["--model", str(llama), *args]
    proc = plan_cli(capsys, *argv)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_that_is_not_a_causal_lm_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ConfigError, match="not a causal LM"):
        read_shape(str(tmp_path), "--model")
