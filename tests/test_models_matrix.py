"""Every model family people bring, through every command (issue #19's matrix).

Tiny random-weight models of GPT-2, GPT-NeoX, OPT, Llama (grouped-query attention, tied
embeddings), Mistral, Qwen2, Qwen3, Gemma 3 and Phi-3, each with a byte-level BPE tokenizer shaped
like its family's: no pad token (Llama, Mistral, GPT-2, GPT-NeoX), pad = EOS (Qwen3, Phi-3), an
end-of-turn stop token beside EOS, a chat template. Reward-model backbones besides those: BERT
(the packaged all-MiniLM-L6-v2) and a tiny DeBERTa-v2. Built from transformers' own config classes
(rlhfkit.tiny), no download. Every path runs in this process through the same functions the
commands call; the heavier cases (every critic, LoRA, resume, pairs) are marked slow.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from rlhfkit.cli import main as cli
from rlhfkit.ppo import PPOConfig, PPOTrainer
from rlhfkit.reward_training import RewardConfig, train_reward_model
from rlhfkit.tiny import STYLES

CAUSAL = ["gpt2", "gpt-neox", "opt", "llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3"]
ENCODERS = ["bert", "deberta-v2"]
# The families whose tokenizers ship a chat template.
CHAT = [a for a in CAUSAL if STYLES[{"gemma3": "gemma"}.get(a, a)].chat_template]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, world_topics):
    """Rankings with ties (plain and conversational), TRL pairs, prompts (plain and chat)."""
    d = tmp_path_factory.mktemp("matrix-data")
    rows, conv, pairs = [], [], []
    for i, t in enumerate(world_topics[:16]):
        prompt = f"Explain {t.name} in simple terms."
        texts = [t.analogy[0], t.plain[0], t.technical[0], t.error[0]]
        ranking = ["r0", ["r1", "r2"], "r3"] if i % 2 else ["r0", "r1", "r2", "r3"]
        rec = {"prompt": prompt, "responses": [{"id": f"r{j}", "text": x} for j, x in enumerate(texts)],
               "ranking": ranking}  # fmt: skip
        rows.append(rec)
        conv.append({**rec, "prompt": [{"role": "user", "content": prompt}]})
        pairs.append({
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": texts[0]}],
            "rejected": [{"role": "assistant", "content": texts[3]}],
        })  # fmt: skip
    for name, recs in (("rankings", rows), ("conv", conv), ("pairs", pairs)):
        with open(d / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in recs)
    with open(d / "prompts.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"prompt": r["prompt"]}) + "\n" for r in conv[:8])
    with open(d / "plain_prompts.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows[:8])
    return d


def _finite(values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _metrics(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


_RM_CACHE: dict[str, Path] = {}


def reward_model(arch: str, tiny_models, data, tmp_path_factory) -> Path:
    """A reward model trained on the conversational rankings with ties (once per family)."""
    if arch not in _RM_CACHE:
        out = tmp_path_factory.mktemp(f"rm-{arch}") / "rm"
        res = train_reward_model(RewardConfig(
            model=str(tiny_models[arch]), data=str(data / "conv.jsonl"), out=str(out),
            batch_size=4, learning_rate=1e-3, eval_split=0.25, progress=False,
        ))  # fmt: skip
        assert math.isfinite(res["loss"]) and res["n_pairs"] > 0
        _RM_CACHE[arch] = out
    return _RM_CACHE[arch]


def _ppo(policy: Path, out: Path, prompts: Path, **kw) -> PPOConfig:
    args = dict(
        policy=str(policy), prompts=str(prompts), out=str(out), total_episodes=8, batch_size=4,
        response_length=6, progress=False, sample_every=1, num_samples=4, learning_rate=1e-4,
    )  # fmt: skip
    return PPOConfig(**{**args, **kw})


def _check_run(out: Path, n_updates: int) -> None:
    rows = _metrics(out / "metrics.jsonl")
    assert len(rows) == n_updates
    for key in ("loss/policy", "loss/value", "objective/kl", "objective/scores"):
        assert _finite(r[key] for r in rows), key
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "policy")  # a plain HF model again


# ---------------------------------------------------------------------------------- generate


@pytest.mark.parametrize("arch", CAUSAL)
def test_generate_and_annotate_import(arch, tiny_models, data, tmp_path, capsys):
    for name in ("prompts", "plain_prompts"):
        cands = tmp_path / f"{name}.cands.jsonl"
        code = cli(["generate", "--model", str(tiny_models[arch]), "--prompts",
                    str(data / f"{name}.jsonl"), "-k", "2", "--max-new-tokens", "6", "--out", str(cands)])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        recs = [json.loads(x) for x in cands.read_text(encoding="utf-8").splitlines()]
        assert len(recs) == 8 and all(len(r["responses"]) == 2 for r in recs)
        # a conversation is written back as the conversation it was
        assert isinstance(recs[0]["prompt"], list) == (name == "prompts")
        code = cli(["annotate", "import", "--db", str(tmp_path / f"{name}.db"), str(cands)])
        assert code == 0, capsys.readouterr().err


# ------------------------------------------------------------------------------ reward model


def _auto_tokenizer(rm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(rm_dir)


@pytest.mark.parametrize("arch", CAUSAL + ENCODERS)
def test_train_rm_saves_a_model_transformers_scores_the_same(
    arch, tiny_models, data, tmp_path_factory, capsys
):
    rm_dir = reward_model(arch, tiny_models, data, tmp_path_factory)
    assert _finite(r["rm/loss"] for r in _metrics(rm_dir / "metrics.jsonl"))
    from rlhfkit.models import RewardModel

    rm = RewardModel.from_pretrained(rm_dir, trained=True)
    chat = arch in CHAT
    assert (rm.settings.input_format == "chat") == chat
    prompt = [{"role": "user", "content": "Explain tides in simple terms."}]
    responses = ["The moon pulls the sea.", "Tides rise and fall twice a day because of the moon."]
    ours = rm.score([prompt] * 2, responses, normalized=False)
    if rm.settings.input_format == "text_pair":
        theirs = _text_pair_scores(
            rm_dir, prompt[0]["content"], responses
        )  # one user turn: its text
    else:
        feats, _ = rm.encode([prompt] * 2, responses)
        ids = [f["input_ids"] for f in feats]
        if chat:  # the template's markers are in what the model reads, and the saved tokenizer
            # reads the rendered text back to the same ids
            text = rm.tokenizer.decode(ids[0])
            assert all(m in text for m in _markers(arch)), text
            assert _auto_tokenizer(rm_dir)(text, add_special_tokens=False)["input_ids"] == ids[0]
        theirs = _auto_scores_ids(rm_dir, ids)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # score: pairs get chosen/rejected scores
    out = rm_dir.parent / "scored.jsonl"
    assert (
        cli(
            [
                "score",
                "--model",
                str(rm_dir),
                "--data",
                str(data / "pairs.jsonl"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    scored = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert _finite(s["chosen_score"] for s in scored) and _finite(
        s["rejected_score"] for s in scored
    )
    capsys.readouterr()


def _markers(arch: str) -> list[str]:
    st = STYLES[{"gemma3": "gemma"}.get(arch, arch)]
    return [t for t in st.extra if t in (st.chat_template or "")]


def _auto_scores_ids(rm_dir: Path, ids: list[list[int]]) -> torch.Tensor:
    """Raw scores from transformers alone (AutoModelForSequenceClassification, a right-padded
    batch with the saved tokenizer's pad token, the score read where transformers reads it)."""
    from transformers import AutoModelForSequenceClassification

    tok = _auto_tokenizer(rm_dir)
    tok.padding_side = "right"
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    batch = tok.pad({"input_ids": ids}, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1)


def _text_pair_scores(rm_dir: Path, prompt: str, responses: list[str]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    with torch.no_grad():
        batch = tok([prompt] * len(responses), responses, padding=True, return_tensors="pt")
        return model(**batch).logits.squeeze(-1)


@pytest.mark.slow
@pytest.mark.parametrize("arch", CAUSAL + ENCODERS)
def test_train_rm_on_pairs_and_plain_rankings(arch, tiny_models, data, tmp_path):
    for name in ("pairs", "rankings"):
        res = train_reward_model(RewardConfig(
            model=str(tiny_models[arch]), data=str(data / f"{name}.jsonl"),
            out=str(tmp_path / name), batch_size=4, eval_split=0.25, progress=False,
        ))  # fmt: skip
        assert math.isfinite(res["loss"]) and res["n_pairs"] > 0
        assert _finite(r["rm/loss"] for r in _metrics(tmp_path / name / "metrics.jsonl"))


# ------------------------------------------------------------------------------------ PPO


@pytest.mark.parametrize("arch", CAUSAL)
def test_ppo_with_reward_fn_and_detect(arch, tiny_models, data, tmp_path, capsys):
    out = tmp_path / "run"
    trainer = PPOTrainer(
        _ppo(tiny_models[arch], out, data / "prompts.jsonl"),
        reward_fn=lambda p, r: [float(len(x.split())) for x in r],
    )
    assert trainer.chat == (arch in CHAT)
    assert trainer.pad_id not in trainer.stop_ids and trainer.pad_id < len(trainer.tokenizer)
    trainer.train()
    _check_run(out, 2)
    samples = out / "samples.jsonl"
    rows = [json.loads(x) for x in samples.read_text(encoding="utf-8").splitlines()]
    base = tmp_path / "base.jsonl"
    base.write_text("".join(json.dumps({**r, "step": 0}) + "\n" for r in rows), encoding="utf-8")
    code = cli(["detect", "--base", str(base), "--tuned", str(samples), "--json"])
    assert code in (0, 1)
    json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("arch", CAUSAL)
def test_ppo_with_its_reward_model(arch, tiny_models, data, tmp_path, tmp_path_factory):
    rm = reward_model(arch, tiny_models, data, tmp_path_factory)
    trainer = PPOTrainer(_ppo(tiny_models[arch], tmp_path / "run", data / "prompts.jsonl",
                              reward_model=str(rm)))  # fmt: skip
    assert trainer.critic_kind == "frozen-reward-model+head"  # same tokenizer: the cheap critic
    trainer.train()
    _check_run(tmp_path / "run", 2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", CAUSAL)
@pytest.mark.parametrize("critic", ["head", "frozen-reward-model", "policy", "reward-model"])
def test_ppo_every_critic(arch, critic, tiny_models, data, tmp_path, tmp_path_factory):
    rm = reward_model(arch, tiny_models, data, tmp_path_factory)
    PPOTrainer(_ppo(tiny_models[arch], tmp_path / "run", data / "prompts.jsonl",
                    reward_model=str(rm), critic=critic)).train()  # fmt: skip
    _check_run(tmp_path / "run", 2)


@pytest.mark.slow
@pytest.mark.parametrize("arch", CAUSAL)
def test_ppo_lora_and_resume(arch, tiny_models, data, tmp_path, tmp_path_factory):
    from safetensors.torch import load_file

    rm = reward_model(arch, tiny_models, data, tmp_path_factory)
    kw = dict(reward_model=str(rm), lora_r=4, total_episodes=12, save_every=1, save_total_limit=3)
    full, part = tmp_path / "full", tmp_path / "part"
    PPOTrainer(_ppo(tiny_models[arch], full, data / "prompts.jsonl", **kw)).train()
    _check_run(full, 3)
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step-1", part / "checkpoints" / "step-1")
    PPOTrainer(_ppo(tiny_models[arch], part, data / "prompts.jsonl", resume=True, **kw)).train()
    a = load_file(str(full / "policy" / "model.safetensors"))
    b = load_file(str(part / "policy" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("rm_arch", [*ENCODERS, "qwen2"])
def test_ppo_with_a_reward_model_of_another_family(rm_arch, tiny_models, data, tmp_path,
                                                   tmp_path_factory):  # fmt: skip
    """Policy Llama, reward model from another family with its own tokenizer: the reward model
    reads the decoded text through its own tokenizer (and template); a critic that needs the
    policy's tokens falls back (auto) or is refused with a clear message."""
    from rlhfkit.errors import ConfigError
    from rlhfkit.models import RewardModel

    rm_dir = reward_model(rm_arch, tiny_models, data, tmp_path_factory)
    seen: list[str] = []
    rm = RewardModel.from_pretrained(rm_dir, trained=True)
    encode = rm.encode

    def spy(prompts, responses):
        feats, lengths = encode(prompts, responses)
        seen.extend(rm.tokenizer.decode(f["input_ids"]) for f in feats)
        return feats, lengths

    rm.encode = spy
    cfg = _ppo(tiny_models["llama"], tmp_path / "run", data / "prompts.jsonl")
    trainer = PPOTrainer(cfg, reward_model=rm)
    assert trainer.critic_kind == "head"
    trainer.train()
    _check_run(tmp_path / "run", 2)
    if rm_arch == "qwen2":  # its own template, not the policy's
        assert all("<|im_start|>assistant" in t and "<|start_header_id|>" not in t for t in seen)
    for critic in ("frozen-reward-model", "frozen-reward-model+head", "reward-model"):
        with pytest.raises(ConfigError, match="does not read the policy's token ids"):
            PPOTrainer(_ppo(tiny_models["llama"], tmp_path / critic, data / "prompts.jsonl",
                            critic=critic, reward_model=str(rm_dir)))  # fmt: skip


# ------------------------------------------------------------------------------ left padding


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma3", "phi3"])
def test_a_left_padded_prompt_reads_as_it_does_alone(arch, tiny_models):
    """RoPE models: padding on the left with position ids that count real tokens only, the same
    prompt gives the same tokens and log-probs alone and in a padded batch (1e-5)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.loading import choose_pad_id, stop_token_ids
    from rlhfkit.ops import logprobs_from_logits
    from rlhfkit.rollout import encode_prompts, generate, position_ids_from_mask

    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
    stops = stop_token_ids(tok, model)
    pad = choose_pad_id(tok, stops, model.get_input_embeddings().num_embeddings)
    short, long = (
        "Explain tides.",
        "Explain in simple terms why the sea rises and falls twice a day.",
    )

    def run(prompts):
        ids, mask = encode_prompts(tok, prompts, pad)  # (B, P) left-padded
        torch.manual_seed(0)
        resp = generate(model, ids, mask, 8, 1e-4, pad, stops)  # near-greedy: (B, R)
        qr, am = torch.cat([ids, resp], 1), torch.cat([mask, torch.ones_like(resp)], 1)
        with torch.no_grad():
            logits = model(input_ids=qr, attention_mask=am,
                           position_ids=position_ids_from_mask(am)).logits  # fmt: skip
        return resp, logprobs_from_logits(logits[:, ids.shape[1] - 1 : -1], resp, 1.0)

    resp_alone, lp_alone = run([short])
    resp_batch, lp_batch = run([long, short])
    assert (encode_prompts(tok, [long, short], pad)[1][1] == 0).any()  # really padded
    assert torch.equal(resp_batch[1], resp_alone[0])
    torch.testing.assert_close(lp_batch[1], lp_alone[0], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ clear errors


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, tiny_models):
    """Directories that must be refused with one line each."""
    import transformers

    from rlhfkit.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    # a two-label classifier (a sentiment model, say) is not a reward model
    cfg = transformers.AutoConfig.from_pretrained(tiny_models["llama"], num_labels=2)
    transformers.AutoModelForSequenceClassification.from_config(cfg).save_pretrained(root / "two")
    transformers.AutoTokenizer.from_pretrained(tiny_models["llama"]).save_pretrained(root / "two")
    # a tokenizer of 512 tokens on a 300-row embedding
    build_tiny_model("llama", root / "small-embedding", vocab_size=300)
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["ppo", "--reward-model", "{tmp}/missing"],
            "--reward-model {tmp}/missing: no such directory",
        ),
        (
            ["ppo", "--reward-model", "runs/missing-rm"],
            "--reward-model runs/missing-rm: no such directory",
        ),
        (["ppo", "--policy", "{bad}/empty"], "--policy {bad}/empty: no config.json"),
        (["train-rm", "--model", "{bad}/empty"], "--model {bad}/empty: no config.json"),
        (["ppo", "--policy", "{deberta}"], "cannot load as a causal LM"),
        (["generate", "--model", "{deberta}"], "cannot load as a causal LM"),
        (["ppo", "--reward-model", "{bad}/two"], "has num_labels=2; a reward model has one output"),
        (["score", "--model", "{bad}/two"], "has num_labels=2"),
        (["ppo", "--reward-model", "{llama}"], "not a reward model"),
        (["generate", "--model", "{bad}/small-embedding"], "embedding has only 300 rows"),
        (["ppo", "--policy", "{bad}/small-embedding"], "embedding has only 300 rows"),
    ],
)
def test_models_that_cannot_work_get_one_line(args, message, bad_models, tiny_models, data,
                                              tmp_path, capsys):  # fmt: skip
    fill = {"tmp": str(tmp_path), "bad": str(bad_models), "deberta": str(tiny_models["deberta-v2"]),
            "llama": str(tiny_models["llama"])}  # fmt: skip
    args = [a.format(**fill) for a in args]
    defaults = {
        "ppo": ["--policy", fill["llama"], "--reward-fn", "rlhfkit.world:gold_reward_fn",
                "--prompts", str(data / "prompts.jsonl"), "--out", str(tmp_path / "run")],
        "train-rm": ["--data", str(data / "rankings.jsonl"), "--out", str(tmp_path / "rm")],
        "generate": ["--prompts", str(data / "prompts.jsonl"), "--out", str(tmp_path / "c.jsonl")],
        "score": ["--data", str(data / "pairs.jsonl"), "--out", str(tmp_path / "s.jsonl")],
    }[args[0]]  # fmt: skip
    given = set(args[1::2])
    for flag, value in zip(defaults[::2], defaults[1::2], strict=True):
        if flag not in given:
            args += [flag, value]
    capsys.readouterr()
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(**fill) in err
    assert err.count("\n") == 0 and "Traceback" not in err, err


@pytest.mark.slow  # an interpreter start-up
def test_a_missing_reward_model_exits_2_without_traceback(tiny_models, data, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "rlhfkit", "ppo", "--policy", str(tiny_models["llama"]),
         "--reward-model", "rm-that-was-never-trained", "--prompts", str(data / "prompts.jsonl"),
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--reward-model rm-that-was-never-trained: no such directory" in proc.stderr


def test_eval_split_holds_out_rankings_when_every_ranking_shares_one_prompt(
    tiny_models, tmp_path, world_topics
):
    t = world_topics[0]
    texts = [t.analogy[0], t.plain[0], t.technical[0], t.error[0]]
    path = tmp_path / "one-prompt.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(20):
            order = [f"r{j}" for j in ([0, 1, 2, 3] if i % 3 else [1, 0, 3, 2])]
            f.write(json.dumps({"prompt": "Explain it.", "ranking": order,
                                "responses": [{"id": f"r{j}", "text": x} for j, x in enumerate(texts)]}) + "\n")  # fmt: skip
    res = train_reward_model(RewardConfig(model=str(tiny_models["llama"]), data=str(path),
                                          out=str(tmp_path / "rm"), batch_size=4, progress=False))  # fmt: skip
    assert res["n_rankings"] == 1  # 0.05 of 20 rankings
    assert "by ranking: every ranking shares one prompt" in res["eval_data"]
    saved = json.loads((tmp_path / "rm" / "eval.json").read_text(encoding="utf-8"))
    assert saved["eval_data"] == res["eval_data"] and "note" not in saved


# ------------------------------------------------------------------------------ chat templates


def test_conversational_candidates_stay_conversations_through_the_annotation_app(
    tiny_models, data, tmp_path, capsys
):
    """generate -> annotate import -> rankings -> export: the export's prompts are the
    conversations, so train-rm renders them with its chat template."""
    from rlhfkit.collect.annotate.store import Store
    from rlhfkit.data import read_preferences

    cands = tmp_path / "c.jsonl"
    assert cli(["generate", "--model", str(tiny_models["llama"]), "--prompts",
                str(data / "prompts.jsonl"), "-k", "3", "--max-new-tokens", "4",
                "--out", str(cands)]) == 0  # fmt: skip
    db = tmp_path / "ann.db"
    assert cli(["annotate", "import", "--db", str(db), str(cands)]) == 0
    store = Store(db)
    store.init()
    aid = store.annotator_by_token(store.add_annotator("alice")).id
    while (item := store.next_item(aid, overlap=1)) is not None:
        store.submit_ranking(aid, item["item_id"], ["r2", ["r0", "r1"]])
    assert store.get_item(1)["prompt_messages"] == [
        {"role": "user", "content": "Explain quantum computing in simple terms."}
    ]
    out = tmp_path / "rankings.jsonl"
    assert (
        cli(["annotate", "export", "--db", str(db), "--format", "rankings", "--out", str(out)]) == 0
    )
    rankings = list(read_preferences(out))
    assert len(rankings) == 8 and all(r.is_conversational for r in rankings)
    res = train_reward_model(RewardConfig(model=str(tiny_models["qwen3"]), data=str(out),
                                          out=str(tmp_path / "rm"), batch_size=2, progress=False))  # fmt: skip
    assert math.isfinite(res["loss"])
    from rlhfkit.reward.model import RewardModel

    assert RewardModel.from_pretrained(tmp_path / "rm").settings.input_format == "chat"
    capsys.readouterr()


def test_a_conversation_reads_the_same_in_rm_training_and_in_ppo_scoring(
    tiny_models, data, tmp_path, monkeypatch
):
    """What train-rm renders for a conversation's prompt (the text all K responses start with)
    is exactly what the reward model inside PPO renders for the same conversation, template
    markers included; the policy's own inputs carry the policy's template."""
    from rlhfkit.models import RewardModel

    prefixes: list[str] = []
    format_text = RewardModel.format_text
    mark = "\x00RESPONSE\x00"

    def spy(self, prompt, response):
        # the text that comes before any response: the conversation as this model reads it
        prefixes.append(format_text(self, prompt, mark).split(mark)[0])
        return format_text(self, prompt, response)

    monkeypatch.setattr(RewardModel, "format_text", spy)
    rm_dir = tmp_path / "rm"
    train_reward_model(RewardConfig(model=str(tiny_models["qwen3"]), data=str(data / "conv.jsonl"),
                                    out=str(rm_dir), batch_size=4, eval_split=0.25, progress=False,
                                    normalize=False))  # fmt: skip
    in_training = set(prefixes)
    assert all(p.startswith("<|im_start|>user\n") for p in in_training)
    assert sum("Explain" in p for p in in_training) == 16  # every conversation of the data

    prefixes.clear()
    trainer = PPOTrainer(_ppo(tiny_models["llama"], tmp_path / "run", data / "prompts.jsonl",
                              reward_model=str(rm_dir)))  # fmt: skip
    trainer.train()
    assert prefixes and set(prefixes) <= in_training, set(prefixes) - in_training
    # the policy (Llama-style) reads its own template, ending with the generation prompt
    rendered = [trainer.tokenizer.decode(x) for x in _policy_inputs(trainer, data)]
    assert all(r.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n") for r in rendered)
    assert all("<|im_start|>" not in r for r in rendered)


def _policy_inputs(trainer, data) -> list[list[int]]:
    from rlhfkit.chat import encode_rendered, render_prompt
    from rlhfkit.data import read_prompt_inputs

    prompts = read_prompt_inputs(data / "prompts.jsonl")
    texts = [render_prompt(trainer.tokenizer, p, trainer.chat) for p in prompts]
    return encode_rendered(trainer.tokenizer, texts, trainer.chat)


@pytest.mark.slow  # a minute or two: two PPO processes on a 100M-parameter policy
def test_a_realistic_size_runs(tmp_path):
    """The ~100M-parameter Llama-shaped policy of docs/scaling.md runs 2 PPO updates with LoRA
    and with full fine-tuning (benchmarks/realistic_size.py, the figures' own script)."""
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "benchmarks" / "realistic_size.py"
    out = tmp_path / "size.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--work-dir", str(tmp_path), "--json", str(out),
         # the model's size is the point; half the figures' batch and response keep it shorter
         "--batch-size", "4", "--response-length", "16"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert 95e6 < res["parameters"] < 105e6
    assert [r["mode"] for r in res["runs"]] == ["LoRA r=16", "full fine-tuning"]
    for r in res["runs"]:
        assert r["finite"] and len(r["seconds_per_update"]) == 2
    lora, full = res["runs"]
    # LoRA keeps no reference copy, gradients or Adam moments of the frozen weights
    assert lora["peak_rss_mb"] < full["peak_rss_mb"]
