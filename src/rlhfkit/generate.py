"""Sample K candidate responses per prompt from a causal LM: the input of the annotation app.

Prompts are left-padded (a decoder-only model continues from the last position, so padding must
come first) with a pad id that is no stop token and lies inside the embedding
(:func:`rlhfkit.loading.choose_pad_id`): with pad == EOS, the attention mask is the only thing
telling padding from a real end of text, and any code that trusts the ids gets it wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhfkit.models import quiet_transformers

if TYPE_CHECKING:
    from rlhfkit.chat import Prompt


def generate_candidates(
    model_path: str | Path,
    prompts: list[Prompt],
    k: int = 4,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    chat_template: str | bool = "auto",
    device: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``{"prompt", "responses": [{"id", "text"}]}`` for each prompt, K sampled responses each.

    A prompt is text or a conversation (a list of messages; written back as it was given).
    ``chat_template`` (``auto``/``always``/``never``, see :mod:`rlhfkit.chat`; ``True`` means
    ``always``) decides whether prompts go through the tokenizer's chat template with the
    generation prompt. Text is cut at the first stop token (EOS, or an end-of-turn id from the
    model's generation config) and decoded without special tokens. The same seed gives the same
    candidates on the same machine and library versions.
    """
    import torch

    from rlhfkit.chat import is_conversational, render_prompt, use_chat_template
    from rlhfkit.loading import choose_pad_id, embedding_rows, load_causal_lm, stop_token_ids
    from rlhfkit.rollout import encode_prompts

    if k < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ValueError("k, max_new_tokens and batch_size must be at least 1")
    if temperature <= 0:
        raise ValueError(
            "temperature must be > 0 (this command samples; use a small value for near-greedy)"
        )
    mode = {True: "always", False: "auto"}.get(chat_template, chat_template)  # type: ignore[call-overload]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with quiet_transformers():
        model, tokenizer = load_causal_lm(str(model_path), "--model")
    model = model.to(device).eval()
    chat = use_chat_template(mode, tokenizer, is_conversational(prompts), f"--model {model_path}")
    stop_ids = stop_token_ids(tokenizer, model)
    pad_id = choose_pad_id(tokenizer, stop_ids, embedding_rows(model))
    torch.manual_seed(seed)

    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        # 1. render (chat template with the generation prompt, or plain text), tokenize, left-pad
        texts = [render_prompt(tokenizer, p, chat) for p in batch]
        input_ids, attention_mask = encode_prompts(tokenizer, texts, pad_id, chat=chat)  # (B, T)
        width = input_ids.shape[1]
        # 2. sample K continuations per prompt (position ids follow the attention mask, so a
        #    left-padded prompt reads the same positions as alone, RoPE models included)
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
                eos_token_id=stop_ids,
            )  # (B * k, T + new)
        new_tokens = out[:, width:].tolist()
        # 3. cut at the first stop token, decode, group K per prompt
        for i, prompt in enumerate(batch):
            responses = []
            for j in range(k):
                ids = new_tokens[i * k + j]
                stop = next((n for n, t in enumerate(ids) if t in stop_ids), len(ids))
                text = tokenizer.decode(ids[:stop], skip_special_tokens=True)
                responses.append({"id": f"r{j}", "text": text.strip()})
            yield {"prompt": prompt, "responses": responses}
