"""Sample K candidate responses per prompt from a causal LM: the input of the annotation app.

Prompts are left-padded (a decoder-only model continues from the last position, so padding must
come first) with a pad token distinct from EOS: with pad == EOS, the attention mask is the only
thing telling padding from a real end of text, and any code that trusts the ids gets it wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _pad_id(tokenizer: Any) -> int:
    """A pad id that is not EOS. Padding positions are masked out, so any other id works; we reuse
    an existing special token rather than adding one (that would resize the embeddings)."""
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return int(tokenizer.pad_token_id)
    for candidate in (tokenizer.unk_token_id, tokenizer.bos_token_id, 0):
        if candidate is not None and candidate != eos:
            return int(candidate)
    return 1


def generate_candidates(
    model_path: str | Path,
    prompts: list[str],
    k: int = 4,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    chat_template: bool = False,
    device: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"prompt", "responses": [{"id", "text"}]}`` for each prompt, K sampled responses each.

    Text is cut at the first EOS and decoded without special tokens. ``chat_template`` wraps each
    prompt as a user message with the tokenizer's chat template (for instruction-tuned models).
    The same seed gives the same candidates on the same machine and library versions.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if k < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ValueError("k, max_new_tokens and batch_size must be at least 1")
    if temperature <= 0:
        raise ValueError(
            "temperature must be > 0 (this command samples; use a small value for near-greedy)"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).to(device).eval()
    tokenizer.padding_side = "left"
    pad_id = _pad_id(tokenizer)
    eos_id = tokenizer.eos_token_id
    torch.manual_seed(seed)

    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        texts = batch
        if chat_template:
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in batch
            ]
        # 1. tokenize, left-padded with a pad id that is not EOS
        enc = [tokenizer(t, add_special_tokens=not chat_template)["input_ids"] for t in texts]
        width = max(len(ids) for ids in enc)
        input_ids = torch.full((len(enc), width), pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(enc), width), dtype=torch.long)  # (B, T)
        for i, ids in enumerate(enc):
            if ids:
                input_ids[i, width - len(ids) :] = torch.tensor(ids)
                attention_mask[i, width - len(ids) :] = 1
        # 2. sample K continuations per prompt
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
            )  # (B * k, T + new)
        new_tokens = out[:, width:].tolist()
        # 3. cut at the first EOS, decode, group K per prompt
        for i, prompt in enumerate(batch):
            responses = []
            for j in range(k):
                ids = new_tokens[i * k + j]
                if eos_id is not None and eos_id in ids:
                    ids = ids[: ids.index(eos_id)]
                text = tokenizer.decode(ids, skip_special_tokens=True)
                responses.append({"id": f"r{j}", "text": text.strip()})
            yield {"prompt": prompt, "responses": responses}
