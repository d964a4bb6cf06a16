"""PPO (Schulman et al. 2017) with token-level rewards and GAE, as in RLHF (Ziegler et al. 2019).

One PPO rollout, with ``N`` responses and ``R`` response columns (``mask [N, R]`` is 1 on a prefix of each
row: the row's tokens up to and including its EOS)::

    kl = token_kl(old_logprobs, ref_logprobs) * mask                # [N, R] per-token k1 estimate
    rewards = token_rewards(reward, kl, mask, controller.value)     # -beta * KL_t, + r on the last token
    advantages, returns = gae(rewards, old_values, mask, gamma, lam)
    advantages = whiten(advantages, mask)
    # then, for every epoch and shuffled minibatch:
    loss = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_ratio)[0]
    loss = loss + vf_coef * ppo_value_loss(values, old_values, returns, mask, value_clip)[0]

The KL controllers and the reward shaping ``r - beta * KL`` are in :mod:`moslim_pl.losses.kl`.
Every mean here is over the response tokens of the whole batch (a masked token mean). Pure torch: no
Lightning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from moslim_pl.errors import MoslimError
from moslim_pl.losses.kl import shape_rewards


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (any equal shapes); 0 for an empty mask."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Population variance (divided by the count, not count - 1) of ``x`` where ``mask`` is 1."""
    centred = torch.where(mask.bool(), x - masked_mean(x, mask), torch.zeros_like(x))
    return masked_mean(centred**2, mask)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalize ``x [N, R]`` to unit variance over the masked positions; 0 where ``mask`` is 0.

    ``(x - mean) / sqrt(var + eps)`` with the masked mean and population variance; ``shift_mean=False``
    adds the mean back (only the scale changes), as is usual for rewards rather than advantages.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def last_token_index(mask: Tensor) -> Tensor:
    """``[N, R] -> [N]`` column of each row's last response token (0 for an empty row)."""
    return (mask.long().sum(-1) - 1).clamp(min=0)


def token_rewards(rewards: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Token-level rewards ``[N, R]``: ``-kl_coef * kl_t`` on every response token, plus the sequence reward
    ``rewards [N]`` on each row's last response token; 0 beyond it.

    ``kl [N, R]`` is the per-token KL estimate (:func:`moslim_pl.losses.kl.token_kl`), detached. Summed over a row this is
    RLOO's shaped reward ``r - kl_coef * KL_seq`` (:func:`moslim_pl.losses.kl.shape_rewards`).
    """
    if rewards.dim() != 1 or kl.shape != mask.shape or kl.shape[0] != rewards.shape[0]:
        raise MoslimError(
            f"token_rewards needs rewards [N] and kl, mask [N, R], got {tuple(rewards.shape)}, "
            f"{tuple(kl.shape)}, {tuple(mask.shape)}"
        )
    sparse = torch.zeros_like(kl)
    rows = torch.arange(kl.shape[0], device=kl.device)
    sparse[rows, last_token_index(mask)] = rewards.to(kl.dtype)
    shaped = shape_rewards(sparse, kl, kl_coef)
    return torch.where(mask.bool(), shaped, torch.zeros_like(shaped))


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over the response tokens.

    With ``V_{t+1} = 0`` at and beyond each row's last token (the episode ends there, nothing is
    bootstrapped)::

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t = delta_t + gamma * lam * A_{t+1}
        returns_t = A_t + V_t          (the value target: the lam-return)

    Args:
        rewards: ``[N, R]`` token-level rewards (:func:`token_rewards`).
        values: ``[N, R]`` the critic's ``V(s_t)`` of the state before response token ``t``, from the
            rollout (no grad); only the masked positions are read.
        mask: ``[N, R]`` 1 on a prefix of each row (its response tokens); rows may differ in length.
        gamma, lam: discount and GAE's ``lambda``, both in ``[0, 1]``.

    Returns:
        ``(advantages [N, R], returns [N, R])``, detached, 0 where ``mask`` is 0.
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise MoslimError(f"GAE needs gamma and lam in [0, 1], got {gamma}, {lam}")
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise MoslimError(
            f"gae needs rewards, values and mask of one shape [N, R], got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    keep = mask.bool()
    rewards = torch.where(keep, rewards.detach(), torch.zeros_like(rewards))
    values = torch.where(keep, values.detach().to(rewards.dtype), torch.zeros_like(rewards))
    advantages = torch.zeros_like(rewards)
    running = rewards.new_zeros(rewards.shape[0])
    next_value = rewards.new_zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        # beyond a row's end rewards and values are 0, so running stays 0 until its last token
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
        next_value = values[:, t]
    advantages = torch.where(keep, advantages, torch.zeros_like(advantages))
    return advantages, advantages + values


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_ratio: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate, one advantage per token.

    ``rho_t = exp(logp_t - old_logp_t)``; ``loss = masked_mean(max(-A_t * rho_t, -A_t * clip(rho_t,
    1 - eps, 1 + eps)))``: the pessimistic side of the two surrogates; a token whose ratio already moved
    past the clip in the advantage's direction gets no gradient.

    Args:
        logprobs: ``[N, R]`` token log-probs under the policy being trained (with grad).
        old_logprobs: ``[N, R]`` token log-probs under the policy that sampled (detached here).
        advantages: ``[N, R]`` per-token advantages (:func:`gae`, whitened or not); detached here.
        mask: ``[N, R]`` 1 on response tokens; other positions contribute nothing.
        clip_ratio: PPO's ``eps`` > 0.

    Returns:
        ``(loss, stats)``: the scalar loss and detached scalars ``clip_fraction`` (share of response
        tokens where the clipped surrogate was chosen), ``approx_kl`` (mean token k3 estimate of
        KL(old || policy): ``rho - 1 - log rho``) and ``ratio`` (mean token ratio).
    """
    if clip_ratio <= 0:
        raise MoslimError(f"clip_ratio must be > 0, got {clip_ratio}")
    keep = mask.bool()
    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    advantages = advantages.detach().to(logprobs.dtype)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped > unclipped).to(logprobs.dtype), mask),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def ppo_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, value_clip: float | None
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped value loss ``0.5 * masked_mean(max((V - G)^2, (V_clip - G)^2))``.

    ``V_clip = old_V + clip(V - old_V, -value_clip, value_clip)`` keeps the critic near its rollout
    predictions, as the policy's ratio clipping does; ``value_clip=None`` uses ``(V - G)^2`` alone.

    Args:
        values: ``[N, R]`` the critic's predictions now (with grad).
        old_values: ``[N, R]`` its predictions at rollout time (detached here).
        returns: ``[N, R]`` the targets ``G`` (:func:`gae`); detached here.
        mask: ``[N, R]`` 1 on response tokens.
        value_clip: the clip range (> 0), or ``None``.

    Returns:
        ``(loss, stats)``: the scalar loss and detached ``value_clip_fraction`` (share of tokens whose
        clipped error was the larger).
    """
    if value_clip is not None and value_clip <= 0:
        raise MoslimError(f"value_clip must be > 0 or None, got {value_clip}")
    returns, old_values = returns.detach().to(values.dtype), old_values.detach().to(values.dtype)
    error = (values - returns) ** 2
    if value_clip is None:
        worst, clipped_share = error, torch.zeros_like(error)
    else:
        clipped_values = old_values + torch.clamp(values - old_values, -value_clip, value_clip)
        clipped_error = (clipped_values - returns) ** 2
        worst = torch.maximum(error, clipped_error)
        clipped_share = (clipped_error > error).to(values.dtype)
    loss = 0.5 * masked_mean(worst, mask)
    with torch.no_grad():
        stats = {"value_clip_fraction": masked_mean(clipped_share, mask)}
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """``1 - Var(G - V) / Var(G)`` over the masked positions: 1 = perfect critic, 0 = no better than the
    mean, negative = worse; NaN-free (0 when the returns do not vary)."""
    var_returns = masked_var(returns, mask)
    if var_returns <= 0:
        return var_returns.new_zeros(())
    return 1.0 - masked_var(returns - values, mask) / var_returns
