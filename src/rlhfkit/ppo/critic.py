"""The critic (value function) and the module PPO trains: policy + value.

Five critics, chosen with ``PPOConfig.critic`` (measurements behind the default in docs/ppo.md):

- ``"head"``: a scalar head on the policy's own last hidden state — one forward pass gives logits
  and values (lm-human-preferences' layout: its policy carries a ``value`` head on the trunk);
- ``"policy"``: a separate backbone initialised from the policy (OpenRLHF's default);
- ``"reward-model"``: a separate backbone initialised from the reward model, head included (TRL's
  default); it must share the policy's tokenizer, since it reads the policy's tokens;
- ``"frozen-reward-model"``: the reward model's own trunk, frozen, with a trainable value head
  warm-started from its score head. The trunk reads each rollout once (no gradient, no second copy
  of the weights: it is the scoring model itself); the PPO epochs train the head on those cached
  hidden states. The values start as the reward model's score of every prefix, as with
  ``"reward-model"``, at the cost of one reward-model forward per batch instead of a second model
  trained alongside the policy. Same tokenizer requirement. A strong start, but a linear function
  of features that never adapt: over longer runs it fits the returns worse than ``"head"``;
- ``"frozen-reward-model+head"``: the sum of the two: the frozen reward model's head plus a
  zero-initialised head on the policy trunk, which learns what the frozen part gets wrong.

The value head is zero-initialised (lm-human-preferences), so the first values are 0 and the first
advantages are the plain returns.

With ``PPOConfig.value_norm`` (the default) the head learns the value in units of the returns'
running standard deviation (PopArt, van Hasselt et al. 2016): ``V = σ·(w·h + b) + μ``. When μ and σ
move, ``w`` and ``b`` are rescaled so that every value stays what it was. Without it a zero-initialised
head on a reward model's raw scores (±20 is common) cannot reach their scale in a few dozen Adam steps
(each moves a weight by about the learning rate), and its explained variance stays near 0
(measured in docs/ppo.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rlhfkit.loading import disable_dropout, fuse_activations


class ValueHead(nn.Module):
    """``hidden (B, T, H) -> value (B, T)``: one linear layer, zero-initialised, whose output is
    scaled by the returns' running statistics (``return_mean + return_std · linear(h)``; 0 and 1
    until :meth:`update_return_stats` is called).

    ``policy_hidden_size``: a second zero-initialised linear layer reading the policy's hidden
    states, added to the first (``frozen-reward-model+head``: the reward model's reading of each
    prefix, corrected by a head whose features follow the policy)."""

    def __init__(self, hidden_size: int, policy_hidden_size: int | None = None):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.policy_linear = None
        if policy_hidden_size is not None:
            self.policy_linear = nn.Linear(policy_hidden_size, 1)
            nn.init.zeros_(self.policy_linear.weight)
            nn.init.zeros_(self.policy_linear.bias)
        # Buffers: saved with the critic, broadcast by DDP, never trained.
        self.register_buffer("return_mean", torch.zeros(()))
        self.register_buffer("return_std", torch.ones(()))
        self.register_buffer("stats_weight", torch.zeros(()))  # debiasing of the moving averages
        self.register_buffer("return_sq_mean", torch.zeros(()))

    @property
    def reads_policy(self) -> bool:
        return self.policy_linear is not None

    def forward(
        self, hidden: torch.Tensor, policy_hidden: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``policy_hidden`` is read by the second layer only (ignored without one)."""
        out = self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)
        if self.policy_linear is not None:
            if policy_hidden is None:
                raise ValueError("this value head also reads the policy's hidden states")
            out = out + self.policy_linear(policy_hidden.to(out.dtype)).squeeze(-1)
        return out * self.return_std.to(out.dtype) + self.return_mean.to(out.dtype)

    @torch.no_grad()
    def update_return_stats(self, mean: float, sq_mean: float, decay: float) -> None:
        """Fold one batch's mean and mean square of the returns into the moving averages (debiased,
        so the first batch counts fully) and rescale the linear layer so that the head's outputs do
        not change (PopArt's "preserving outputs precisely")."""
        old_mean, old_std = float(self.return_mean), float(self.return_std)
        weight = decay * float(self.stats_weight) + (1 - decay)
        share = (1 - decay) / weight  # this batch's share of the debiased average (1 at first)
        new_mean = old_mean + share * (mean - old_mean)
        new_sq = float(self.return_sq_mean) + share * (sq_mean - float(self.return_sq_mean))
        new_std = max(math.sqrt(max(new_sq - new_mean**2, 0.0)), 1e-3)  # constant returns
        self.stats_weight.fill_(weight)
        self.return_mean.fill_(new_mean)
        self.return_sq_mean.fill_(new_sq)
        self.return_std.fill_(new_std)
        self.linear.weight.mul_(old_std / new_std)
        self.linear.bias.mul_(old_std).add_(old_mean - new_mean).div_(new_std)
        if self.policy_linear is not None:  # the mean shift is carried by the first layer's bias
            self.policy_linear.weight.mul_(old_std / new_std)
            self.policy_linear.bias.mul_(old_std / new_std)


class ActorCritic(nn.Module):
    """Policy (a causal LM, possibly a PEFT model) and critic in one module, so that one
    ``accelerator.prepare`` / one DDP wrapper / one optimizer covers both.

    ``forward`` returns the logits and values of the last ``keep`` positions only: PPO needs them
    for the response tokens, and computing the LM head over the prompt would be wasted work.
    """

    def __init__(self, policy: nn.Module, value_head: ValueHead, critic_backbone: nn.Module | None):
        super().__init__()
        self.policy = policy
        self.value_head = value_head
        self.critic_backbone = critic_backbone

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        keep: int,
        critic_hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``critic_hidden`` (B, keep, H): the critic's hidden states, already computed (a frozen
        trunk's, cached per rollout); the value head reads them instead of a backbone's."""
        reads_policy = self.value_head.reads_policy
        shared = self.critic_backbone is None and (critic_hidden is None or reads_policy)
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=shared,
            logits_to_keep=keep,
            use_cache=False,
        )
        logits = out.logits[:, -keep:]  # (B, keep, V)
        policy_hidden = out.hidden_states[-1][:, -keep:] if shared else None  # (B, keep, H)
        if critic_hidden is not None:
            hidden = critic_hidden
        elif shared:
            hidden = policy_hidden
        else:
            hidden = self.critic_backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
            ).last_hidden_state[:, -keep:]  # (B, keep, H)
        return logits, self.value_head(hidden, policy_hidden)  # (B, keep, V), (B, keep)

    def critic_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything of the critic that the policy's own checkpoint does not hold."""
        state = {f"value_head.{k}": v for k, v in self.value_head.state_dict().items()}
        if self.critic_backbone is not None:
            state.update(
                {f"critic_backbone.{k}": v for k, v in self.critic_backbone.state_dict().items()}
            )
        return state

    def load_critic_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        head = {k[len("value_head.") :]: v for k, v in state.items() if k.startswith("value_head.")}
        # Checkpoints written before the running return statistics existed lack their buffers:
        # those keep their initial values (0 and 1, i.e. no scaling, as those runs trained).
        missing, unexpected = self.value_head.load_state_dict(head, strict=False)
        if unexpected or any(k.startswith(("linear.", "policy_linear.")) for k in missing):
            raise KeyError(
                f"critic checkpoint does not match the value head: {missing + unexpected}"
            )
        if self.critic_backbone is not None:
            prefix = "critic_backbone."
            body = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            self.critic_backbone.load_state_dict(body)


def hidden_size_of(config) -> int:
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"cannot find the hidden size in {type(config).__name__}")


def build_critic(
    kind: str,
    policy: nn.Module,
    policy_path: str,
    reward_model_path: str | None,
    dtype: torch.dtype,
) -> tuple[ValueHead, nn.Module | None]:
    """The value head and (for a separate critic) its backbone, as ``PPOConfig.critic`` asks."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    if kind == "head":
        return ValueHead(hidden_size_of(policy.config)).to(dtype), None
    if kind == "policy":
        backbone = AutoModel.from_pretrained(policy_path, dtype=dtype)
        disable_dropout(backbone)
        fuse_activations(backbone)
        return ValueHead(hidden_size_of(backbone.config)).to(dtype), backbone
    if kind == "reward-model":
        if reward_model_path is None:
            raise ValueError("critic 'reward-model' needs --reward-model")
        seq = AutoModelForSequenceClassification.from_pretrained(
            reward_model_path, num_labels=1, dtype=dtype
        )
        backbone = trunk_of(seq)
        disable_dropout(backbone)
        fuse_activations(backbone)
        return value_head_from_score(seq, dtype), backbone
    raise ValueError(f"critic must be 'head', 'policy' or 'reward-model', got {kind!r}")


def value_head_from_score(
    seq_model: nn.Module, dtype: torch.dtype, policy_hidden_size: int | None = None
) -> ValueHead:
    """A value head for a sequence-classification model's trunk, warm-started from its one-output
    score layer (TRL / OpenRLHF): the critic starts out predicting the reward model's raw score of
    every prefix, a better first guess than 0 for a reward paid at the end. ``policy_hidden_size``:
    plus a zero-initialised layer on the policy's hidden states (:class:`ValueHead`)."""
    head = ValueHead(hidden_size_of(seq_model.config), policy_hidden_size).to(dtype)
    score = getattr(seq_model, "score", None) or getattr(seq_model, "classifier", None)
    if isinstance(score, nn.Linear) and score.weight.shape == head.linear.weight.shape:
        with torch.no_grad():
            head.linear.weight.copy_(_whole(score.weight))
            if score.bias is not None:
                head.linear.bias.copy_(_whole(score.bias))
    return head


def _whole(param: torch.Tensor) -> torch.Tensor:
    """The full tensor of a parameter, gathered if it is a shard (an FSDP-sharded reward model)."""
    return param.full_tensor() if hasattr(param, "full_tensor") else param


def trunk_of(seq_model: nn.Module) -> nn.Module:
    """The trunk of a sequence-classification model (the model without its score layer)."""
    return getattr(seq_model, seq_model.base_model_prefix)


def reads_same_tokens(policy_tokenizer, other_tokenizer) -> bool:
    """Whether every token of the policy's vocabulary has the same id in ``other_tokenizer``'s (a
    model reading the policy's token ids then reads the same text; added tokens such as a pad
    token of its own do not matter)."""
    theirs = other_tokenizer.get_vocab()
    return all(theirs.get(token) == i for token, i in policy_tokenizer.get_vocab().items())
