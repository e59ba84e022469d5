"""Rollout mechanics: left padding and position ids, sampling, truncation at the stop token."""

from __future__ import annotations

import pytest
import torch

from rlhfkit.loading import choose_pad_id
from rlhfkit.ops import logprobs_from_logits
from rlhfkit.rollout import (
    decode_responses,
    encode_prompts,
    generate,
    left_pad,
    position_ids_from_mask,
    truncate_after_stop,
)
from rlhfkit.tiny import build_tiny_causal_lm


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_lm(n_layer=2, n_embd=32)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_left_pad_and_position_ids_by_hand():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    # a response appended after the prompt continues the count; masked tail positions don't matter
    full = torch.tensor([[0, 0, 1, 1, 1, 0]])
    assert position_ids_from_mask(full).tolist()[0][:5] == [0, 0, 0, 1, 2]


def test_choose_pad_id_never_eos(tiny):
    _, tok = tiny
    assert choose_pad_id(tok) == tok.pad_token_id != tok.eos_token_id

    class NoPad:
        pad_token_id = None
        eos_token_id = 3
        bos_token_id = 3
        unk_token_id = 7
        all_special_ids = (3, 7)

    assert choose_pad_id(NoPad(), rows=10) == 7


def test_left_padded_prompt_logprobs_equal_unpadded(tiny):
    model, tok = tiny
    pad = choose_pad_id(tok)
    prompts = ["the cat sat on a mat and the dog", "a dog"]
    ids, mask = encode_prompts(tok, prompts, pad)  # the short prompt gets left padding
    assert mask[1, 0] == 0 and mask[0].all()
    cont = torch.tensor([tok.convert_tokens_to_ids(["ran", "big", "the"])] * 2)  # (2, 3)
    full = torch.cat([ids, cont], 1)
    full_mask = torch.cat([mask, torch.ones_like(cont)], 1)
    with torch.no_grad():
        logits = model(
            input_ids=full, attention_mask=full_mask, position_ids=position_ids_from_mask(full_mask)
        ).logits
    padded_lp = logprobs_from_logits(logits[1:, -4:-1], cont[1:], temperature=0.7)
    alone = torch.cat([torch.tensor([tok("a dog")["input_ids"]]), cont[1:]], 1)
    with torch.no_grad():
        alone_logits = model(input_ids=alone).logits
    alone_lp = logprobs_from_logits(alone_logits[:, -4:-1], cont[1:], temperature=0.7)
    torch.testing.assert_close(padded_lp, alone_lp, atol=1e-5, rtol=1e-5)
    # and without correct position ids the answer is different (the test can fail)
    with torch.no_grad():
        wrong = model(input_ids=full, attention_mask=full_mask).logits
    wrong_lp = logprobs_from_logits(wrong[1:, -4:-1], cont[1:], temperature=0.7)
    assert not torch.allclose(wrong_lp, alone_lp, atol=1e-4)


def test_truncate_after_stop_by_hand():
    eos, stop, pad = 2, 9, 0
    responses = torch.tensor([[5, 2, 6, 7], [5, 6, 7, 8], [9, 5, 2, 6], [2, 2, 2, 2]])
    out, mask, has_stop = truncate_after_stop(responses, [eos, stop], pad)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0], [2, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert has_stop.tolist() == [True, False, True, True]


def test_generation_stops_at_eos_and_masks_the_rest(tiny):
    model, tok = tiny
    pad, eos = choose_pad_id(tok), tok.eos_token_id
    torch.manual_seed(0)
    ids, mask = encode_prompts(tok, ["the cat"] * 64, pad)
    # at temperature 3 the random tiny model emits EOS (about 1 token in 37) in some of 64 rows
    # of 12 tokens, not in all
    raw = generate(model, ids, mask, 12, 3.0, pad, [eos])
    assert raw.shape == (64, 12)
    responses, rmask, has_stop = truncate_after_stop(raw, [eos], pad)
    assert 0 < has_stop.sum() < 64
    for row, m, stopped in zip(responses, rmask, has_stop, strict=True):
        n = int(m.sum())
        if stopped:
            assert row[n - 1] == eos and (row[: n - 1] != eos).all()
            assert (row[n:] == pad).all()
        else:
            assert n == 12
    texts = decode_responses(tok, responses, rmask)
    assert all("<eos>" not in t and "<pad>" not in t for t in texts)


def test_generate_ignores_model_sampling_defaults(tiny):
    """A top_k=1 stored with the model would make sampling greedy; PPO must sample plainly."""
    model, tok = tiny
    pad = choose_pad_id(tok)
    model.generation_config.top_k = 1
    try:
        torch.manual_seed(1)
        ids, mask = encode_prompts(tok, ["the cat"] * 32, pad)
        raw = generate(model, ids, mask, 6, 1.0, pad, [tok.eos_token_id])
    finally:
        model.generation_config.top_k = 50
    assert len({tuple(r.tolist()) for r in raw}) > 1
    assert model.generation_config.top_k == 50  # restored


def test_sampling_distribution_is_softmax_over_temperature(tiny):
    """The scores generate samples from equal log_softmax(logits / T) recomputed by a forward pass
    with our position ids — the recomputation PPO does (temperature detail)."""
    from transformers import GenerationConfig

    model, tok = tiny
    pad, T = choose_pad_id(tok), 0.6
    ids, mask = encode_prompts(tok, ["the cat sat on", "a dog"], pad)
    torch.manual_seed(2)
    out = model.generate(
        input_ids=ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True,
        generation_config=GenerationConfig(
            do_sample=True, temperature=T, top_k=None, top_p=None, max_new_tokens=5,
            pad_token_id=pad, eos_token_id=[tok.eos_token_id],
        ),
    )  # fmt: skip
    responses = out.sequences[:, ids.shape[1] :]
    _, rmask, _ = truncate_after_stop(responses, [tok.eos_token_id], pad)
    scores = torch.stack(out.scores, 1)  # (B, r, V) processed logits = logits / T
    sampled_lp = torch.log_softmax(scores, -1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    full_mask = torch.cat([mask, torch.ones_like(responses)], 1)
    with torch.no_grad():
        logits = model(
            input_ids=out.sequences, attention_mask=full_mask,
            position_ids=position_ids_from_mask(full_mask),
        ).logits  # fmt: skip
    recomputed = logprobs_from_logits(logits[:, ids.shape[1] - 1 : -1], responses, temperature=T)
    # (min_new_tokens would mask EOS and change the distribution: it is never used)
    m = rmask.bool()
    torch.testing.assert_close(recomputed[m], sampled_lp[m], atol=1e-4, rtol=1e-4)
    untempered = logprobs_from_logits(logits[:, ids.shape[1] - 1 : -1], responses)
    assert not torch.allclose(untempered[m], sampled_lp[m], atol=1e-3)


def test_plain_sampling_covers_the_whole_vocabulary(tmp_path):
    """top_k=0 / top_p=1.0 mean no filter: with a vocabulary larger than 50 and nearly uniform
    logits, the first sampled token takes more than 50 distinct values (transformers' default
    top_k=50 must not apply, or samples come from a truncated distribution while PPO's logprobs,
    ratio and KL are computed under the full softmax)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    words = [f"w{i}" for i in range(80)]
    path = build_tiny_causal_lm(tmp_path / "lm", words, n_layer=1, n_embd=16)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():  # tied to the input embeddings: nearly uniform, distinct logits
        model.lm_head.weight.copy_(1e-3 * torch.randn_like(model.lm_head.weight))
    pad = choose_pad_id(tok)
    # one context for all rows: one next-token distribution to sample from
    ids, mask = encode_prompts(tok, ["w1 w2"] * 512, pad)
    torch.manual_seed(0)
    plain = generate(model, ids, mask, 1, 1.0, pad, [tok.eos_token_id])[:, 0]  # (512,)
    assert len(torch.unique(plain)) > 60  # of 84 tokens
    torch.manual_seed(0)
    top50 = generate(model, ids, mask, 1, 1.0, pad, [tok.eos_token_id], top_k=50)[:, 0]
    assert len(torch.unique(top50)) <= 50


def _multinomial(logits, temperature, top_k=0, top_p=1.0):
    """transformers' own draw (``generate``'s ``_sample``): the reference our sampler replaces."""
    return torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1).squeeze(1)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3", "qwen2"])
def test_our_loop_feeds_the_model_what_transformers_generate_does(arch, tiny_models, monkeypatch):
    """With transformers' draw put back in, our sampling loop gives ``model.generate``'s very
    samples for the same seed: the cache, the growing mask and the position ids are the ones
    ``generate`` feeds (gemma3: a sliding window of 16, crossed by the 24 tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    import rlhfkit.collect.generate as gen
    from rlhfkit.loading import stop_token_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    stops = stop_token_ids(tok, model)
    pad = choose_pad_id(tok, stops, model.get_input_embeddings().weight.shape[0])
    ids, mask = encode_prompts(tok, ["the cat sat on the mat", "a dog", "hello"] * 4, pad)
    monkeypatch.setattr(gen, "sample_next", _multinomial)
    torch.manual_seed(3)
    ours = generate(model, ids, mask, 24, 0.8, pad, stops)
    torch.manual_seed(3)
    theirs = model.generate(
        input_ids=ids, attention_mask=mask,
        generation_config=GenerationConfig(
            do_sample=True, temperature=0.8, top_k=0, top_p=1.0, max_new_tokens=24,
            pad_token_id=pad, eos_token_id=stops,
        ),
    )[:, ids.shape[1] :]  # fmt: skip
    theirs = torch.cat([theirs, theirs.new_full((12, 24 - theirs.shape[1]), pad)], 1)
    assert torch.equal(ours, theirs)


def test_sampled_tokens_logprobs_equal_the_full_forward_within_1e_5(tiny, monkeypatch):
    """The distribution each token was drawn from, as our loop computed it from the KV cache,
    equals the one PPO recomputes with a full forward pass over prompt + response (within 1e-5),
    and the same seed draws the same samples."""
    import rlhfkit.collect.generate as gen

    model, tok = tiny
    pad, T = choose_pad_id(tok), 0.7
    ids, mask = encode_prompts(tok, ["the cat sat on", "a dog", "big"] * 8, pad)
    steps: list[torch.Tensor] = []  # (B, V) log-softmax of every step

    def recording(logits, temperature, top_k=0, top_p=1.0):
        steps.append(torch.log_softmax(logits.float() / temperature, -1))
        return gen.sample_next.__wrapped__(logits, temperature, top_k, top_p)

    recording.__wrapped__ = gen.sample_next
    torch.manual_seed(4)
    plain = generate(model, ids, mask, 10, T, pad, [tok.eos_token_id])
    monkeypatch.setattr(gen, "sample_next", recording)
    torch.manual_seed(4)
    raw = generate(model, ids, mask, 10, T, pad, [tok.eos_token_id])
    assert torch.equal(raw, plain)
    responses, rmask, _ = truncate_after_stop(raw, [tok.eos_token_id], pad)
    cached = torch.stack(steps, 1)  # (B, r, V)
    r = cached.shape[1]
    cached_lp = cached.gather(-1, responses[:, :r, None]).squeeze(-1)  # (B, r)
    full_mask = torch.cat([mask, rmask], 1)
    with torch.no_grad():
        logits = model(
            input_ids=torch.cat([ids, responses], 1), attention_mask=full_mask,
            position_ids=position_ids_from_mask(full_mask),
        ).logits  # fmt: skip
    full_lp = logprobs_from_logits(logits[:, ids.shape[1] - 1 : -1], responses, T)[:, :r]
    m = rmask[:, :r].bool()
    assert (cached_lp[m] - full_lp[m]).abs().max() < 1e-5


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (3, 1.0), (0, 0.8), (4, 0.9)])
def test_sample_next_draws_from_the_filtered_softmax(top_k, top_p):
    """200,000 draws from one distribution (a token of probability 0 among them): each token's
    share is its probability under softmax(logits / T), filtered as transformers' top-k / top-p
    warpers filter it, within 5 standard errors; filtered tokens are never drawn."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    from rlhfkit.collect.generate import sample_next

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -float("inf"), 1.5, -0.5])
    T, n = 0.8, 200_000
    scores = (logits / T)[None]
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    probs = torch.softmax(scores, -1)[0].double()  # (V,)
    torch.manual_seed(0)
    draws = sample_next(logits.expand(n, -1), T, top_k, top_p)  # (n,)
    share = torch.bincount(draws, minlength=len(logits)).double() / n
    stderr = (probs * (1 - probs) / n).sqrt()
    assert ((share - probs).abs() <= 5 * stderr + 1e-12).all(), (share, probs)
    assert (share[probs == 0] == 0).all()
