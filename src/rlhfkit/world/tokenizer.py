"""The world's tokenizer: word-level over every string of the world, with pad, EOS, BOS and UNK.

Words keep their leading space (``"▁word"``) and punctuation is a token of its own, so decoding is
exact: ``decode(encode(s)) == s`` for world text, and a response decoded alone has no leading space.
"""

from __future__ import annotations

from collections.abc import Iterable

from rlhfkit.world.content import KINDS, OPENERS, TOPICS
from rlhfkit.world.gold import make_prompt

SPECIAL_TOKENS = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"}
# Punctuation split off words as tokens of their own ("terms." -> "▁terms" "."); apostrophes and
# hyphens stay inside words ("Earth's", "solar-powered").
_PUNCTUATION = r"[.,!?;:]"


def world_texts() -> list[str]:
    """Every string of the world: the prompts, the openers and all statements."""
    texts = [make_prompt(t) for t in TOPICS]
    texts += list(OPENERS)
    for topic in TOPICS.values():
        for kind in KINDS:
            texts += topic.statements(kind)
    return texts


def _pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    # Metaspace keeps each word's leading space inside the token ("▁word"), which is what makes
    # decoding exact: "terms." decodes without a space before the full stop, and a response decoded
    # on its own has no leading space.
    # A newline (as in a reward model's "{prompt}\n{response}" template) is a token of its own,
    # so the word after it is still a known "▁word".
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(_PUNCTUATION), behavior="isolated"),
        ]
    )


def build_world_tokenizer(texts: Iterable[str] | None = None):
    """A word-level ``PreTrainedTokenizerFast`` over the world's text (or ``texts``).

    Pad, EOS, BOS and UNK are four distinct tokens; ``decode(encode(s)) == s`` for world text. The
    tokenizer pads on the left (for generation) and adds no special tokens when encoding.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer()
    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS.values():
        vocab.setdefault(tok, len(vocab))
    vocab.setdefault("▁", len(vocab))  # a lone space (double spaces) still round-trips
    vocab.setdefault("▁\n", len(vocab))  # a newline
    for text in world_texts() if texts is None else texts:
        for piece, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **{f"{name}_token": token for name, token in SPECIAL_TOKENS.items()},  # pad, eos, bos, unk
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
