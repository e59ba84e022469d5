"""The demo's sizes: ``DemoSettings.full()`` (the default run) and ``DemoSettings.quick()``."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhfkit.world.policy import SAMPLING_TEMPERATURE


@dataclass
class PPORunSpec:
    """One PPO run of the demo."""

    name: str
    kl_coef: float
    description: str
    ensemble_objective: str | None = None
    """With ``--mitigations``: PPO on the reward-model ensemble with this objective (``worst``,
    ``uwo``, ``mean``); None: on the single reward model."""
    uwo_lambda: float = 1.0


@dataclass
class DemoSettings:
    """Sizes of every stage; ``full()`` is the default run, ``quick()`` the half-minute one."""

    build_quick: bool
    """Build the small, barely fluent quick base policy (unless the full one is already cached)."""
    groups: int
    """Candidate groups (training prompts with K responses each) to rank."""
    k: int
    annotators_per_prompt: int
    rm_epochs: int
    rm_batch_size: int
    rm_learning_rate: float
    eval_groups: int
    """Held-out groups of K candidates used to measure the reward model against gold."""
    ppo_episodes: int
    ppo_batch_size: int
    ppo_learning_rate: float
    ppo_mini_batches: int
    response_length: int
    eval_samples: int
    """Held-out responses sampled from each policy for the comparison."""
    hacking_check_every: int
    ppo_epochs: int = 4
    """PPO epochs over each batch of rollouts (``PPOConfig.num_ppo_epochs``)."""
    temperature: float = SAMPLING_TEMPERATURE
    """Sampling temperature of every stage (candidates, PPO, comparison), as in lm-human-preferences:
    the base policy is a small model, and at 0.7 most of its samples are fluent world text."""
    runs: list[PPORunSpec] = field(default_factory=list)
    mitigations: bool = False
    """``rlhfkit demo --mitigations``: also train a reward-model ensemble, run ``mitigation_runs``
    (PPO on the ensemble at the low β), and draw best-of-n curves on held-out prompts."""
    ensemble_members: int = 3
    mitigation_runs: list[PPORunSpec] = field(default_factory=list)
    bon_prompts: int = 64
    """Held-out prompts of the best-of-n curves."""
    bon_max_n: int = 64
    """Samples per prompt: best-of-n for n = 1, 2, 4, … up to it."""
    processes: int | None = None
    """Processes that share the sampling and train the PPO runs side by side (``None``: one per
    core torch may use, so 1 with ``OMP_NUM_THREADS=1``). A model this small keeps one core busy far
    better than it splits its matrix products over two. Neither the samples nor the trained models
    depend on it (the training runs at ``rm_threads`` and ``ppo_threads`` whatever the count)."""
    rm_threads: int | None = 2
    """torch threads the reward model (and with ``mitigations`` the ensemble) trains with, whatever
    the machine's cores: the count the demo's figures were checked with. Another count sums some
    gradients in another order (:func:`rlhfkit.runtime.cores.torch_threads`), which makes another
    run. None: as many threads as torch has."""
    ppo_threads: int | None = 1
    """torch threads each PPO run trains with, whatever the machine's cores (side by side, each
    run's process has this many): the count the figures were checked with, as ``rm_threads``.
    Left to torch's count, --quick kept its lesson on 3 seeds of 5 on 1 thread and on 4
    (docs/benchmarks.md, "Thread counts"). None: torch's threads shared between the runs at once."""

    def training_threads(self, cores: int) -> int:
        """The most torch threads the demo trains with at once on a machine with ``cores`` cores
        (0 where the counts are left to torch)."""
        runs = len(self.runs) + (len(self.mitigation_runs) if self.mitigations else 0)
        at_once = max(1, min(runs, self.processes or cores))
        return max(self.rm_threads or 0, (self.ppo_threads or 0) * at_once)

    @classmethod
    def full(cls) -> DemoSettings:
        # PPO: 45 updates of 2 epochs at 2e-4 (issue #25; it ran 4 epochs at 1e-4): half the
        # training passes. Fewer updates (30 or 36, at 3e-4 or 4e-4) cost seed 3 its lesson, and
        # at β = 0.005 seed 2's low-β run gained nearly as much gold as its sensible run, hence
        # 0.003. The schedules tried are in docs/benchmarks.md (session 14); the promises hold on
        # seeds 0-4 (README).
        return cls(
            build_quick=False, groups=1000, k=4, annotators_per_prompt=2,
            rm_epochs=2, rm_batch_size=32, rm_learning_rate=1e-3, eval_groups=150,
            ppo_episodes=2880, ppo_batch_size=64, ppo_learning_rate=2e-4, ppo_mini_batches=2,
            ppo_epochs=2, response_length=48, eval_samples=384, hacking_check_every=15,
            runs=[
                PPORunSpec("sensible-beta", 0.1, "β = 0.1: the policy improves while staying near the base"),
                PPORunSpec("low-beta", 0.003, "β = 0.003: too low, the policy games the reward model"),
            ],
            mitigation_runs=_mitigation_runs(0.003),
        )  # fmt: skip

    @classmethod
    def quick(cls) -> DemoSettings:
        # Half the full run's rankings, one epoch, and a short PPO run whose low β is low enough,
        # and whose learning rate high enough, to reach the hacking regime in 20 updates of 2
        # epochs (issue #25: it ran 4 epochs at 3e-4): on the fluent base policy (shipped for seeds
        # 0-4, cached by a full demo for the others), seeds 0-4 all show the lesson on the AMD
        # EPYC it was chosen on (docs/benchmarks.md, "The quick demo shows the lesson", "session
        # 15" and "session 19"). Another CPU rounds otherwise and trains other runs: on an Intel
        # Xeon (three arithmetics × seeds 0-4) the low-β run earned more proxy reward and ended
        # with 0.6-4.1 less gold than the sensible run every time, while the sensible run's own
        # gain (-1.6 to +1.0) is mostly within the noise of 128 held-out answers ("Another CPU,
        # other figures", session 23). Fewer rankings (400 groups), fewer updates (16), one
        # minibatch per epoch, or responses of 32 tokens each cost seeds their lesson; a higher
        # sensible β (0.2-0.5), a reward model of 2 epochs or batches of 64 were no steadier.
        return cls(
            build_quick=True, groups=480, k=4, annotators_per_prompt=2,
            rm_epochs=1, rm_batch_size=32, rm_learning_rate=2e-3, eval_groups=40,
            ppo_episodes=640, ppo_batch_size=32, ppo_learning_rate=6e-4, ppo_mini_batches=2,
            ppo_epochs=2, response_length=40, eval_samples=128, hacking_check_every=10,
            # Models this small finish before worker processes would pay for their start-up
            # (2 cores: 28.2 s in one process, 30.6 s in two, session 15). The lesson was checked
            # with the PPO runs on 2 threads each, in turn.
            processes=1, ppo_threads=2,
            runs=[
                PPORunSpec("sensible-beta", 0.1, "β = 0.1: the KL penalty keeps the policy near the base"),
                PPORunSpec("low-beta", 0.002, "β = 0.002: too low, the policy games the reward model"),
            ],
            mitigation_runs=_mitigation_runs(0.002), bon_prompts=32, bon_max_n=32,
        )  # fmt: skip


def _mitigation_runs(beta: float) -> list[PPORunSpec]:
    """The low β again, on an ensemble: its worst member, and its mean less its variance
    (Coste et al. 2023)."""
    return [
        PPORunSpec("low-beta-worst", beta, f"β = {beta:g} on the ensemble's worst-case reward",
                   ensemble_objective="worst"),
        PPORunSpec("low-beta-uwo", beta, f"β = {beta:g} on the ensemble's mean − λ·variance "
                   "(λ = 1)", ensemble_objective="uwo", uwo_lambda=1.0),
    ]  # fmt: skip
