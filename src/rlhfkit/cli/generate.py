"""``rlhfkit generate``: sample K candidate responses per prompt for the annotation app."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from rlhfkit.cli._common import check_sampling, parse_config


@dataclasses.dataclass
class GenerateConfig:
    """Sample K responses per prompt from a causal LM; write {"prompt", "responses": [{"id", "text"}]}."""

    model: str
    """Causal LM: a save_pretrained directory or a Hugging Face model name."""
    prompts: Path
    """Prompts: JSONL/JSON/Parquet records with a 'prompt' field, or a .txt file, one per line."""
    out: Path
    """Output candidates JSONL (written atomically), the input of `rlhfkit annotate import`."""
    k: Annotated[int, tyro.conf.arg(aliases=("-k",))] = 4
    """Responses sampled per prompt."""
    max_new_tokens: int = 64
    """Longest response, in tokens."""
    temperature: float = 1.0
    """Sampling temperature (> 0)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest token set with this much probability (1.0: off)."""
    seed: int = 0
    """Random seed (same seed, same candidates)."""
    batch_size: int = 8
    """Prompts per generate call (each yields K sequences)."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """Chat template of the model's tokenizer, with the generation prompt: auto = for
    conversational prompts (message lists), always = plain prompts too, as one user message
    (the bare flag --chat-template), never = plain text (--no-chat-template)."""

    def __post_init__(self) -> None:
        check_sampling(
            "-k", self.k, self.max_new_tokens, self.temperature, self.top_p, self.batch_size
        )


def main(argv: list[str]) -> int:
    cfg = parse_config(
        GenerateConfig,
        argv,
        prog="rlhfkit generate",
        description="Sample K candidate responses per prompt from any causal LM, for annotation.",
    )
    from rlhfkit.data import read_prompt_inputs
    from rlhfkit.generate import generate_candidates
    from rlhfkit.loading import check_model_source
    from rlhfkit.runtime.io import write_jsonl
    from rlhfkit.runtime.progress import track

    prompts = read_prompt_inputs(cfg.prompts)
    check_model_source(cfg.model, "--model")
    records = generate_candidates(
        cfg.model,
        prompts,
        k=cfg.k,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        chat_template=cfg.chat_template,
    )
    n = write_jsonl(cfg.out, track(records, "generate", len(prompts)))
    print(f"wrote {n} prompts x {cfg.k} responses to {cfg.out}")
    return 0
