"""Tensor operations of RLHF: masked statistics, log-probabilities, entropies.

Pure functions: tensors in, tensors out; ``mask`` is 1 for response tokens that count and 0 for
padding (and for everything after the stop token). The formulas (KL estimators, GAE, the losses)
are in :mod:`rlhfkit.losses`; ``rlhfkit.ops.kl_estimate`` and ``rlhfkit.ops.gae`` still import.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(values * mask) / sum(mask)`` over ``dim`` (all elements when ``dim`` is None).

    An all-zero mask gives 0 rather than NaN (an empty response contributes nothing).
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked elements (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.to(values.dtype).sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True
) -> torch.Tensor:
    """Normalize to mean 0, std 1 using statistics of the masked elements only.

    ``shift_mean=False`` only rescales (the mean is kept): lm-human-preferences whitens rewards this
    way so that their sign is not changed. Elements outside the mask are set to 0.
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def logprobs_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probability of ``tokens`` under ``softmax(logits / temperature)``.

    logits: (B, T, V), tokens: (B, T) -> (B, T). The logits must be divided by the *sampling*
    temperature, or the policy's logprobs do not match the distribution that produced the samples
    and KL grows too fast (lm-human-preferences; "The N Implementation Details of RLHF with PPO").
    Computed as ``logit[token] - logsumexp(logits)`` so the (B, T, V) log-softmax is never stored.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    selected = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return selected - torch.logsumexp(logits, dim=-1)  # (B, T)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` per position: (B, T, V) -> (B, T)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, T, 1)
    probs = torch.exp(logits - logz)
    return logz.squeeze(-1) - (probs * logits).sum(-1)  # (B, T)


def explained_variance(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``1 - Var(target - pred) / Var(target)`` under the mask: 1 is perfect, ≤ 0 is useless."""
    var_target = masked_var(target, mask)
    if var_target <= 0:
        return torch.zeros((), dtype=target.dtype)
    return 1.0 - masked_var(target - pred, mask) / var_target


def __getattr__(name: str):
    # The formulas moved to rlhfkit.losses (which imports this module, hence lazily).
    if name in ("kl_estimate", "gae"):
        from rlhfkit import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'rlhfkit.ops' has no attribute {name!r}")
