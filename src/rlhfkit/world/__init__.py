"""The synthetic "explain simply" world of the demo: a known truth to measure RLHF against.

- ``content``: topics, their statements (plain, technical, error, analogy) and the openers;
- ``gold``: parsing a response back into the world's sentences, and the gold utility (the
  simulated human): ``gold_utility(prompt, response)``, ``gold_reward_fn(prompts, responses)``;
- ``annotators``: simulated annotators (gold + Plackett-Luce noise) and the noise ceiling;
- ``sampling``: the base policy's training distribution, with the planted "fantastic" shortcut;
- ``policy``: the word-level tokenizer, building (and caching) the small GPT-2 base policy, and
  measuring a policy's samples (``evaluate_policy``).

See docs/world.md.
"""

from rlhfkit.world.annotators import (
    DEFAULT_ANNOTATORS,
    SimulatedAnnotator,
    annotate,
    label_accuracy,
    noise_ceiling,
    pairwise_agreement,
    simulate_rankings,
)
from rlhfkit.world.content import (
    FANTASTIC_OPENERS,
    HELDOUT_TOPICS,
    NEUTRAL_OPENERS,
    PROMPT_TEMPLATE,
    TOPICS,
    TRAIN_TOPICS,
)
from rlhfkit.world.gold import (
    GoldWeights,
    ParsedResponse,
    Part,
    gold_reward_fn,
    gold_utility,
    make_prompt,
    parse_response,
    topic_of_prompt,
)
from rlhfkit.world.policy import (
    BaseBuildSettings,
    PolicyEvaluation,
    build_base_policy,
    build_world_tokenizer,
    cache_root,
    evaluate_policy,
    evaluate_texts,
    read_build_info,
)
from rlhfkit.world.sampling import (
    PROMPT_RESPONSE_SEPARATOR,
    ResponseDistribution,
    policy_text,
    sample_example,
    sample_response,
)

__all__ = [
    "DEFAULT_ANNOTATORS",
    "FANTASTIC_OPENERS",
    "HELDOUT_TOPICS",
    "NEUTRAL_OPENERS",
    "PROMPT_RESPONSE_SEPARATOR",
    "PROMPT_TEMPLATE",
    "TOPICS",
    "TRAIN_TOPICS",
    "BaseBuildSettings",
    "GoldWeights",
    "ParsedResponse",
    "Part",
    "PolicyEvaluation",
    "ResponseDistribution",
    "SimulatedAnnotator",
    "annotate",
    "build_base_policy",
    "build_world_tokenizer",
    "cache_root",
    "evaluate_policy",
    "evaluate_texts",
    "gold_reward_fn",
    "gold_utility",
    "label_accuracy",
    "make_prompt",
    "noise_ceiling",
    "pairwise_agreement",
    "parse_response",
    "policy_text",
    "read_build_info",
    "sample_example",
    "sample_response",
    "simulate_rankings",
    "topic_of_prompt",
]
