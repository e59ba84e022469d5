"""Build tiny Hugging Face models locally, from configs, with no download.

Used by the tests and handy for trying the pipeline in seconds: the result is an ordinary
``save_pretrained`` directory that every rlhfkit command (and ``transformers``) loads by path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}


def word_level_tokenizer(words: Iterable[str]):
    """A word-level ``PreTrainedTokenizerFast``: splits on whitespace and punctuation.

    Pad, EOS, BOS and UNK are four distinct tokens (pad must differ from EOS, see docs/ppo.md).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS.values():
        vocab.setdefault(tok, len(vocab))
    for w in words:
        for piece in pre_tokenizers.Whitespace().pre_tokenize_str(w):
            vocab.setdefault(piece[0], len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL_TOKENS["pad"],
        eos_token=SPECIAL_TOKENS["eos"],
        bos_token=SPECIAL_TOKENS["bos"],
        unk_token=SPECIAL_TOKENS["unk"],
    )


def build_tiny_causal_lm(
    out_dir: str | Path,
    words: Iterable[str],
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    n_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised GPT-2 with a word-level tokenizer over ``words`` to ``out_dir``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out_dir = Path(out_dir)
    tokenizer = word_level_tokenizer(words)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
