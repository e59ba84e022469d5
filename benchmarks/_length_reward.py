"""A reward function for cost measurements: more words score higher, up to 20 (the reward's value
does not matter there, only that PPO has something to optimize)."""


def length(prompts: list[str], responses: list[str]) -> list[float]:
    return [min(len(r.split()), 20) / 20 for r in responses]
