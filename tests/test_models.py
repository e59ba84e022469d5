"""RewardModel: head init, padding, pad != EOS, template, truncation, save/load with plain HF."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.errors import ConfigError
from rlhfkit.models import PAD_TOKEN, RewardModel, disable_dropout, minilm_path


@pytest.fixture(scope="module")
def lm32(tiny_lm):
    """The shared tiny word-level GPT-2 (tests/conftest.py), 1 layer × 32."""
    return tiny_lm(n_layer=1, n_embd=32)


def test_minilm_path_points_at_the_shipped_encoder():
    path = minilm_path()
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_new_head_is_one_output_with_lm_human_preferences_init(tiny_lm):
    d = 256
    lm = tiny_lm(n_layer=1, n_embd=d, n_head=4)
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(lm)
    head = rm.model.score
    assert head.out_features == 1 and rm.model.config.num_labels == 1
    # 256 weights: the sample std is within ~10% of 1/sqrt(d+1) = 0.0624 (default init is 0.02).
    assert head.weight.std().item() == pytest.approx(1 / math.sqrt(d + 1), rel=0.15)
    assert rm.settings.input_format == "template"
    assert rm.settings.template == "{prompt}\n{response}"
    assert rm.settings.max_length == 128  # capped at the model's positions
    assert not rm.model.training


def test_scores_do_not_depend_on_batch_padding(lm32):
    rm = RewardModel.from_pretrained(lm32)
    prompts = ["tell me about cats", "tell me", "about dogs the mat"]
    responses = ["good", "the cat sat on the mat and very good", "bad bad"]
    together = rm.score(prompts, responses, batch_size=3)
    alone = torch.cat([rm.score([p], [r]) for p, r in zip(prompts, responses, strict=True)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # The score is read at the appended EOS: changing an earlier token changes it.
    assert rm.score(["tell me"], ["good"]).item() != rm.score(["tell me"], ["bad"]).item()


def test_pad_equal_to_eos_reuses_another_special_token(tmp_path, lm32):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(lm32)
    tok.pad_token = tok.eos_token  # the common GPT-2 setup that breaks last-token pooling
    model = GPT2LMHeadModel.from_pretrained(lm32)
    model.config.pad_token_id = tok.eos_token_id
    tok.save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    rows = model.get_input_embeddings().num_embeddings
    rm = RewardModel.from_pretrained(tmp_path / "m")
    # BOS never ends an input, so it pads: nothing added, nothing resized
    assert rm.tokenizer.pad_token_id == rm.tokenizer.bos_token_id != rm.tokenizer.eos_token_id
    assert rm.model.config.pad_token_id == rm.tokenizer.pad_token_id
    assert rm.model.get_input_embeddings().num_embeddings == rows == len(rm.tokenizer)
    feats, _ = rm.encode(["tell me"], ["good"])
    assert feats[0]["input_ids"][-1] == rm.tokenizer.eos_token_id


def test_a_tokenizer_with_one_special_token_gets_a_pad_token_after_resizing(tmp_path, tiny_models):
    """GPT-2 and GPT-NeoX tokenizers have a single special token (BOS = EOS = UNK) and no pad:
    a new pad token is added, the embedding resized first (no padding_idx outside it)."""
    for arch in ("gpt2", "gpt-neox"):
        rm = RewardModel.from_pretrained(tiny_models[arch])
        assert rm.tokenizer.pad_token == PAD_TOKEN
        assert rm.model.get_input_embeddings().num_embeddings == len(rm.tokenizer)
        assert rm.model.config.pad_token_id == rm.tokenizer.pad_token_id
        rm.save_pretrained(tmp_path / arch)
        back = RewardModel.from_pretrained(tmp_path / arch)
        assert back.tokenizer.pad_token == PAD_TOKEN and len(back.tokenizer) == len(rm.tokenizer)
        torch.testing.assert_close(back.score(["a b"], ["c d"]), rm.score(["a b"], ["c d"]))


def test_save_load_plain_transformers_matches_score(tmp_path, lm32):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = RewardModel.from_pretrained(lm32)
    rm.settings.gain, rm.settings.bias = 2.0, -1.0
    rm.save_pretrained(tmp_path / "rm")
    prompts, responses = ["tell me about cats"] * 2, ["good good", "bad the mat sat on a mat"]

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    assert hf.config.num_labels == 1
    assert hf.config.rlhfkit["template"] == "{prompt}\n{response}"
    assert tok.padding_side == "right"
    texts = [p + "\n" + r + tok.eos_token for p, r in zip(prompts, responses, strict=True)]
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = hf(**enc).logits.squeeze(-1)
        # Left padding also works when position ids follow the mask.
        tok.padding_side = "left"
        left = tok(texts, return_tensors="pt", padding=True)
        pos = (left["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        plain_left = hf(**left, position_ids=pos).logits.squeeze(-1)
    raw = rm.score(prompts, responses, normalized=False)
    torch.testing.assert_close(plain, raw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain_left, raw, rtol=1e-5, atol=1e-5)

    again = RewardModel.from_pretrained(tmp_path / "rm")
    assert again.settings == rm.settings
    torch.testing.assert_close(again.score(prompts, responses), 2.0 * raw - 1.0)


def test_template_is_applied_recorded_and_validated(tmp_path, lm32):
    rm = RewardModel.from_pretrained(lm32, template="Q: {prompt} A: {response}")
    assert rm.format_text("cats", "good") == "Q: cats A: good"
    # Placeholders in the data are not expanded again.
    assert rm.format_text("{response}", "x") == "Q: {response} A: x"
    rm.save_pretrained(tmp_path / "rm")
    assert (
        RewardModel.from_pretrained(tmp_path / "rm").settings.template
        == "Q: {prompt} A: {response}"
    )
    with pytest.raises(ConfigError, match="response"):
        RewardModel.from_pretrained(lm32, template="{prompt}")
    with pytest.raises(ConfigError, match=r"config\.json"):
        RewardModel.from_pretrained(tmp_path)


def test_truncation_keeps_the_end_and_reports_full_length(lm32):
    rm = RewardModel.from_pretrained(lm32, max_length=8)
    long = " ".join(["the"] * 20) + " good"
    feats, lengths = rm.encode(["tell me"], [long])
    ids = feats[0]["input_ids"]
    assert len(ids) == 8 and lengths[0] == 2 + 21 + 1
    assert ids[-1] == rm.tokenizer.eos_token_id
    assert rm.tokenizer.convert_ids_to_tokens(ids[-2]) == "good"


def test_dropout_is_disabled(lm32):
    rm = RewardModel.from_pretrained(lm32)
    ps = [m.p for m in rm.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert ps and all(p == 0.0 for p in ps)
    assert disable_dropout(torch.nn.Sequential(torch.nn.Dropout(0.5))) == 1
    kept = RewardModel.from_pretrained(lm32, dropout=True)
    assert any(m.p > 0 for m in kept.model.modules() if isinstance(m, torch.nn.Dropout))


@pytest.mark.slow
def test_minilm_encoder_reads_text_pairs(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = RewardModel.from_pretrained(minilm_path())
    assert rm.settings.input_format == "text_pair"
    assert rm.model.classifier.out_features == 1
    with pytest.raises(ConfigError, match="text pair"):
        RewardModel.from_pretrained(minilm_path(), template="{prompt}{response}")
    feats, _ = rm.encode(["what is a cat"], ["an animal"])
    assert rm.tokenizer.decode(feats[0]["input_ids"]) == "[CLS] what is a cat [SEP] an animal [SEP]"
    rm.save_pretrained(tmp_path / "rm")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    with torch.no_grad():
        plain = hf(**tok(["what is a cat"], ["an animal"], return_tensors="pt")).logits.squeeze(-1)
    torch.testing.assert_close(
        plain, rm.score(["what is a cat"], ["an animal"]), rtol=1e-5, atol=1e-5
    )


def test_lora_adapters_on_gpt2_without_the_warnings_nobody_can_act_on(monkeypatch):
    """GPT-2's Conv1D layers get LoRA with ``fan_in_fan_out`` set (by PEFT, as it should) and no
    warning reaches the user for it; any other warning still does."""
    import warnings

    import peft
    from peft import LoraConfig
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhfkit.loading import with_lora_adapters

    config = GPT2Config(
        vocab_size=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=1
    )
    model = GPT2LMHeadModel(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lora = with_lora_adapters(model, LoraConfig(r=2, target_modules=["c_attn"]))
    assert lora.peft_config["default"].fan_in_fan_out is True
    assert any("lora_A" in n for n, _ in lora.named_parameters())

    def noisy(model, config):
        warnings.warn("something the user should see", UserWarning, stacklevel=2)
        return model

    monkeypatch.setattr(peft, "get_peft_model", noisy)
    with pytest.warns(UserWarning, match="something the user should see"):
        with_lora_adapters(model, LoraConfig(r=2))
