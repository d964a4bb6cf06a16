"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024).

One RLOO step, with ``B`` prompts, ``k`` samples each and ``N = B * k`` rows laid out as
:func:`moslim_pl.generation.generate` does (rows ``b * k .. b * k + k - 1`` belong to prompt ``b``)::

    shaped = shape_rewards(rewards, kl, controller.value)    # r - beta * KL_seq, BEFORE the baseline
    advantages = rloo_advantages(shaped, k)                  # A_i = r_i - mean_{j != i} r_j
    loss, stats = rloo_loss(logprobs, old_logprobs, advantages, response_mask, clip_ratio)
    controller.update(kl.mean().item(), n_steps=N)

``shape_rewards`` and the KL controllers are in :mod:`moslim_pl.losses.kl`. Pure torch: no Lightning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moslim_pl.errors import MoslimError


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """Leave-one-out advantages ``[N] -> [N]``: each sample's reward minus the mean of its ``k - 1`` siblings.

    ``A_i = r_i - (sum_j r_j - r_i) / (k - 1) = k / (k - 1) * (r_i - mean_j r_j)`` within each prompt's
    group of ``k`` consecutive rows; every group's advantages sum to 0.
    """
    if k < 2:
        raise MoslimError(f"RLOO needs at least 2 samples per prompt for its baseline, got k={k}")
    if rewards.dim() != 1 or rewards.shape[0] % k:
        raise MoslimError(f"rewards must be [B * k] with k={k}, got shape {tuple(rewards.shape)}")
    groups = rewards.reshape(-1, k)
    baseline = (groups.sum(-1, keepdim=True) - groups) / (k - 1)
    return (groups - baseline).reshape(-1)


def scale_advantages(advantages: Tensor, eps: float = 1e-8) -> Tensor:
    """Advantages ``[N] -> [N]`` divided by their standard deviation over the batch (population std).

    RLOO's advantages already sum to 0 within each prompt's group, so only the scale changes: the
    update's size no longer depends on the reward's units (a mapping whose values spread over 0.1 teaches
    as fast as one spread over 10). A batch whose advantages are all 0 stays 0.
    """
    std = advantages.float().std(correction=0)
    return advantages / (std + eps).to(advantages.dtype)


def rloo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    clip_ratio: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Policy-gradient loss with one advantage per sequence.

    Without ``clip_ratio``: ``loss = -mean_i(A_i * sum_t logp_{i,t})``, REINFORCE on the sequence's
    log-probability. Token log-probs are SUMMED within a sequence (the sequence is the action the reward
    judges, as in the RLOO paper) and the result is AVERAGED over sequences, so a long response carries
    more gradient than a short one, and the loss scale does not depend on the batch size.

    With ``clip_ratio = eps``: PPO's clipped surrogate per token, ``rho_t = exp(logp_t - old_logp_t)``,
    ``loss = -mean_i sum_t min(rho_t * A_i, clip(rho_t, 1 - eps, 1 + eps) * A_i)``, with the same
    sum-then-mean normalization. While the policy still equals the one that sampled (``rho = 1``), the
    gradients of the two forms coincide.

    Args:
        logprobs: ``[N, R]`` token log-probs under the policy being trained (with grad).
        old_logprobs: ``[N, R]`` token log-probs under the policy that sampled (no grad needed).
        advantages: ``[N]`` one advantage per sequence (:func:`rloo_advantages`); detached here.
        response_mask: ``[N, R]`` 1 on response tokens; padded positions contribute nothing.
        clip_ratio: PPO's ``eps``; ``None`` disables clipping.

    Returns:
        ``(loss, stats)``: a scalar loss and detached scalars ``clip_fraction`` (share of response
        tokens whose ratio was clipped, 0 without clipping), ``ratio`` (mean token ratio) and
        ``approx_kl_old`` (mean token k3 estimate of KL(old || policy)).
    """
    if clip_ratio is not None and clip_ratio <= 0:
        raise MoslimError(f"clip_ratio must be > 0 or None, got {clip_ratio}")
    mask = response_mask.to(logprobs.dtype)
    advantages = advantages.detach().to(logprobs.dtype).unsqueeze(-1)  # [N, 1]
    log_ratio = (logprobs - old_logprobs.detach()) * mask
    ratio = torch.exp(log_ratio)
    if clip_ratio is None:
        objective = advantages * logprobs
        clipped = torch.zeros_like(mask, dtype=torch.bool)
    else:
        unclipped = ratio * advantages
        bounded = torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio) * advantages
        objective = torch.minimum(unclipped, bounded)
        clipped = bounded < unclipped
    loss = -(objective * mask).sum(-1).mean()
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        stats = {
            "clip_fraction": (clipped.to(mask.dtype) * mask).sum() / tokens,
            "ratio": (ratio * mask).sum() / tokens,
            "approx_kl_old": ((ratio - 1 - log_ratio) * mask).sum() / tokens,
        }
    return loss, stats
