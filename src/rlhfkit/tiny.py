"""Build tiny Hugging Face models locally, from configs, with no download.

Used by the tests and handy for trying the pipeline in seconds: the result is an ordinary
``save_pretrained`` directory that every rlhfkit command (and ``transformers``) loads by path.

- :func:`build_tiny_causal_lm`: a GPT-2 with a word-level tokenizer (the demo world's kind).
- :func:`build_tiny_model`: a random-weight model of a real family (Llama, Mistral, Qwen2/3, Gemma 3,
  Phi-3, GPT-NeoX, OPT, GPT-2, DeBERTa-v2) with a byte-level BPE tokenizer that imitates that
  family's special tokens: no pad token where the family has none (or pad = EOS where it reuses
  it), BOS added where the family adds it, and a chat template with the family's turn markers.
  These are the checkpoints people bring, shrunk to seconds; docs/models.md lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------ families people bring

# Chat templates in the shape of each family's own (the markers and where BOS goes), written for
# these tiny tokenizers; real checkpoints ship their own.
_LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} "
    "[/INST]{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}"
    "{% else %}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}"
)
_CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_PHI3_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}"
)


@dataclass(frozen=True)
class TokenizerStyle:
    """The special tokens of a model family, as its checkpoints ship them."""

    bos: str | None
    eos: str
    unk: str | None = None
    pad: str | None = None  # None: the family ships no pad token; may equal eos
    extra: tuple[str, ...] = ()  # chat markers and other special tokens
    add_bos: bool = False  # the tokenizer prepends BOS to every text
    chat_template: str | None = None
    # Extra stop tokens in generation_config.eos_token_id (an instruct model's end of turn).
    end_of_turn: str | None = None
    encoder: bool = False  # [CLS] A [SEP] B [SEP] text pairs


STYLES: dict[str, TokenizerStyle] = {
    "gpt2": TokenizerStyle(bos="<|endoftext|>", eos="<|endoftext|>", unk="<|endoftext|>"),
    "gpt-neox": TokenizerStyle(bos="<|endoftext|>", eos="<|endoftext|>", unk="<|endoftext|>"),
    "opt": TokenizerStyle(bos="</s>", eos="</s>", unk="<unk>", pad="<pad>", add_bos=True),
    "llama": TokenizerStyle(
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        extra=("<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"),
        add_bos=True,
        chat_template=_LLAMA3_TEMPLATE,
        end_of_turn="<|end_of_text|>",
    ),
    "mistral": TokenizerStyle(
        bos="<s>",
        eos="</s>",
        unk="<unk>",
        extra=("[INST]", "[/INST]"),
        add_bos=True,
        chat_template=_MISTRAL_TEMPLATE,
    ),
    "qwen2": TokenizerStyle(
        bos=None,
        eos="<|im_end|>",
        extra=("<|endoftext|>", "<|im_start|>"),
        chat_template=_CHATML_TEMPLATE,
        end_of_turn="<|endoftext|>",
    ),
    # Qwen base checkpoints: EOS and pad are the same token.
    "qwen3": TokenizerStyle(
        bos=None,
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        extra=("<|im_start|>", "<|im_end|>"),
        chat_template=_CHATML_TEMPLATE,
        end_of_turn="<|im_end|>",
    ),
    "gemma": TokenizerStyle(
        bos="<bos>",
        eos="<eos>",
        unk="<unk>",
        pad="<pad>",
        extra=("<start_of_turn>", "<end_of_turn>"),
        add_bos=True,
        chat_template=_GEMMA_TEMPLATE,
        end_of_turn="<end_of_turn>",
    ),
    # Phi-3: pad is EOS, and the turn ends with <|end|>.
    "phi3": TokenizerStyle(
        bos="<s>",
        eos="<|endoftext|>",
        unk="<unk>",
        pad="<|endoftext|>",
        extra=("<|user|>", "<|assistant|>", "<|system|>", "<|end|>"),
        chat_template=_PHI3_TEMPLATE,
        end_of_turn="<|end|>",
    ),
    "deberta-v2": TokenizerStyle(
        bos="[CLS]", eos="[SEP]", unk="[UNK]", pad="[PAD]", extra=("[MASK]",), encoder=True
    ),
}


def _default_corpus() -> list[str]:
    """Every sentence of the demo world, plus its prompts: enough text for a small BPE."""
    from rlhfkit.world.content import NEUTRAL_OPENERS, PROMPT_TEMPLATE, TOPICS

    texts = list(NEUTRAL_OPENERS)
    for topic in TOPICS.values():
        texts.append(PROMPT_TEMPLATE.format(topic=topic.name))
        for kind in ("plain", "technical", "error", "analogy"):
            texts += list(topic.statements(kind))
    return texts


def bpe_tokenizer(style: str | TokenizerStyle, corpus: Iterable[str] | None = None,
                  vocab_size: int = 512):  # fmt: skip
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``corpus`` (default: the demo
    world's text) with the special tokens, BOS rule and chat template of a model family."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    st = STYLES[style] if isinstance(style, str) else style
    specials: list[str] = []
    for t in (st.pad, st.eos, st.bos, st.unk, *st.extra):
        if t is not None and t not in specials:
            specials.append(t)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus if corpus is not None else _default_corpus()), trainer)
    ids = {t: tok.token_to_id(t) for t in specials}
    if st.encoder:
        cls_, sep = st.bos, st.eos
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls_} $A {sep}", pair=f"{cls_} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls_, ids[cls_]), (sep, ids[sep])],
        )  # fmt: skip
    elif st.add_bos and st.bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{st.bos} $A", pair=f"{st.bos} $A {st.bos} $B", special_tokens=[(st.bos, ids[st.bos])]
        )  # fmt: skip
    kwargs: dict[str, Any] = {"eos_token": st.eos}
    if st.bos is not None:
        kwargs["bos_token"] = st.bos
    if st.unk is not None:
        kwargs["unk_token"] = st.unk
    if st.pad is not None:
        kwargs["pad_token"] = st.pad
    if st.encoder:
        kwargs.update(cls_token=st.bos, sep_token=st.eos, mask_token="[MASK]")
    extra = [t for t in st.extra if t not in ("[MASK]",)]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, additional_special_tokens=extra, **kwargs
    )
    if st.chat_template is not None:
        tokenizer.chat_template = st.chat_template
    return tokenizer


@dataclass(frozen=True)
class Architecture:
    """How to build a tiny random-weight model of one family from ``transformers``' config class."""

    config_class: str
    style: str
    model_class: str = "AutoModelForCausalLM"
    # config kwargs for the tiny size; {h}, {layers}, {heads}, {kv}, {inter}, {positions} filled in
    sizes: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)


# config kwarg -> size name, per naming scheme
_DENSE = {
    "hidden_size": "h", "num_hidden_layers": "layers", "num_attention_heads": "heads",
    "intermediate_size": "inter", "max_position_embeddings": "positions",
}  # fmt: skip
_ROPE = {**_DENSE, "num_key_value_heads": "kv"}  # grouped-query attention
_OPT = {**{k: v for k, v in _DENSE.items() if k != "intermediate_size"},
        "ffn_dim": "inter", "word_embed_proj_dim": "h"}  # fmt: skip
_GPT2 = {"n_embd": "h", "n_layer": "layers", "n_head": "heads", "n_positions": "positions"}

ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture("GPT2Config", "gpt2", sizes=_GPT2),
    "gpt-neox": Architecture("GPTNeoXConfig", "gpt-neox", sizes=_DENSE),
    "opt": Architecture("OPTConfig", "opt", sizes=_OPT),
    # Grouped-query attention and tied embeddings, as the small Llama 3.2 checkpoints have.
    "llama": Architecture("LlamaConfig", "llama", sizes=_ROPE, fixed={"tie_word_embeddings": True}),
    "mistral": Architecture("MistralConfig", "mistral", sizes=_ROPE, fixed={"sliding_window": 16}),
    "qwen2": Architecture("Qwen2Config", "qwen2", sizes=_ROPE, fixed={"tie_word_embeddings": True}),
    "qwen3": Architecture("Qwen3Config", "qwen3", sizes=_ROPE, fixed={"tie_word_embeddings": True}),
    "gemma3": Architecture(
        "Gemma3TextConfig",
        "gemma",
        sizes=_ROPE,
        fixed={"sliding_window": 16, "query_pre_attn_scalar": 8},
    ),
    "phi3": Architecture("Phi3Config", "phi3", sizes=_ROPE),
    "deberta-v2": Architecture(
        "DebertaV2Config",
        "deberta-v2",
        model_class="AutoModel",
        sizes=_DENSE,
        fixed={
            "relative_attention": True,
            "position_biased_input": False,
            "type_vocab_size": 0,
            "pos_att_type": ["p2c", "c2p"],
            "max_relative_positions": -1,
        },
    ),
}


def build_tiny_model(
    arch: str,
    out_dir: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = 2,
    intermediate_size: int | None = None,
    max_positions: int = 256,
    vocab_size: int | None = None,
    tokenizer_vocab_size: int = 512,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
) -> Path:
    """Save a random-weight model of family ``arch`` (a key of :data:`ARCHITECTURES`) with its
    family-style tokenizer to ``out_dir``; returns ``out_dir``.

    ``vocab_size`` (default: the tokenizer's size) may be larger than the tokenizer, as real
    checkpoints pad their embedding to a multiple of 64 or 128.
    """
    import torch
    import transformers

    spec = ARCHITECTURES[arch]
    style = STYLES[spec.style]
    tokenizer = bpe_tokenizer(style, corpus, tokenizer_vocab_size)
    values = {
        "h": hidden_size, "layers": num_layers, "heads": num_heads,
        "kv": num_kv_heads or num_heads, "inter": intermediate_size or 2 * hidden_size,
        "positions": max_positions,
    }  # fmt: skip
    kwargs: dict[str, Any] = {k: values[v] for k, v in spec.sizes.items()}
    kwargs.update(spec.fixed)
    if spec.config_class in ("Qwen3Config", "Gemma3TextConfig", "MistralConfig"):
        kwargs["head_dim"] = hidden_size // num_heads
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,  # None where the family ships no pad token
    }
    config = getattr(transformers, spec.config_class)(
        vocab_size=vocab_size or len(tokenizer), **ids, **kwargs
    )
    torch.manual_seed(seed)
    model = getattr(transformers, spec.model_class).from_config(config)
    if spec.model_class == "AutoModelForCausalLM":
        gen = model.generation_config
        gen.bos_token_id, gen.pad_token_id = ids["bos_token_id"], ids["pad_token_id"]
        stops = [tokenizer.eos_token_id]
        if style.end_of_turn is not None:
            stops.append(tokenizer.convert_tokens_to_ids(style.end_of_turn))
        gen.eos_token_id = stops if len(stops) > 1 else stops[0]
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
