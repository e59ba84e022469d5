"""KL-coefficient controllers for the penalty ``reward - β·KL``."""

from __future__ import annotations


class FixedKLController:
    """A constant β."""

    def __init__(self, coef: float):
        if coef < 0:
            raise ValueError(f"KL coefficient must be ≥ 0, got {coef}")
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Move β so that the measured KL tracks a target (Ziegler et al. 2019, "Fine-Tuning Language
    Models from Human Preferences", §2.2; lm-human-preferences ``AdaptiveKLController``):

    ``err = clip(KL / target − 1, −0.2, 0.2)``, ``β ← β · (1 + err · n_steps / horizon)``

    where ``n_steps`` is the number of episodes (rollouts) in the batch just trained on.
    """

    def __init__(self, init_coef: float, target: float, horizon: int):
        if init_coef < 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"adaptive KL needs init_coef ≥ 0, target > 0, horizon > 0; got {init_coef}, {target}, {horizon}"
            )
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])
