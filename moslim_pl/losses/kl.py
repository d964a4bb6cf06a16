"""KL(policy || reference) estimates, the KL-penalized reward, and the KL coefficient's controllers.

With ``N`` responses and ``R`` response columns (``[N, R]`` token log-probs from
:func:`moslim_pl.rollout.sequence_logprobs`)::

    kl = kl_estimate(logprobs, ref_logprobs, response_mask)    # [N] k1 summed over the response
    shaped = shape_rewards(rewards, kl, controller.value)      # r - beta * KL_seq (RLOO, PPO)
    controller.update(kl.mean().item(), n_steps=N)

Pure torch: no Lightning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from moslim_pl.errors import MoslimError

KL_KINDS = ("k1", "k3")


def token_kl(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy: ``[N, R]``.

    With ``x = ref_logprobs - logprobs``: ``k1 = -x`` (unbiased, can be negative);
    ``k3 = exp(x) - x - 1`` (unbiased, never negative, lower variance; Schulman, "Approximating KL").
    """
    if kind not in KL_KINDS:
        raise MoslimError(f"unknown KL estimator {kind!r}; expected one of {', '.join(KL_KINDS)}")
    log_ratio = ref_logprobs - logprobs
    if kind == "k1":
        return -log_ratio
    return torch.exp(log_ratio) - log_ratio - 1


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, response_mask: Tensor, kind: str = "k1") -> Tensor:
    """Per-sequence KL estimate ``[N]``: :func:`token_kl` summed over the response tokens (``[N, R]`` inputs)."""
    kl = token_kl(logprobs, ref_logprobs, kind)
    return torch.where(response_mask.bool(), kl, torch.zeros_like(kl)).sum(-1)


def shape_rewards(rewards: Tensor, kl: Tensor, kl_coef: float) -> Tensor:
    """The KL-penalized reward ``r - kl_coef * KL_seq`` (``[N]``), the quantity the baseline is taken of.

    ``kl`` is the per-sequence estimate of :func:`kl_estimate` (k1 summed over the response tokens);
    it is detached: the penalty acts through the advantage, not as a differentiable loss term.
    """
    return rewards - kl_coef * kl.detach()


class FixedKLController:
    """A constant KL coefficient; ``update`` does nothing (same interface as the adaptive one)."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise MoslimError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Steer the KL coefficient towards a target KL (Ziegler et al. 2019, "Fine-Tuning LMs from Human Preferences").

    After each batch: ``e = clip(KL / target - 1, -0.2, 0.2)``, ``beta *= 1 + e * n_steps / horizon``.
    ``current_kl`` is the batch's mean per-sequence KL and ``n_steps`` the number of sequences it holds,
    so ``horizon`` is counted in sequences (samples), as in the paper and TRL.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if init_kl_coef < 0 or target <= 0 or horizon <= 0:
            raise MoslimError(
                f"adaptive KL needs kl_coef >= 0, target > 0 and horizon > 0, "
                f"got {init_kl_coef}, {target}, {horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, Any]:
        # Only the coefficient is state: target and horizon are hyperparameters, set by the config.
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


def kl_controller(
    kl_coef: float, kl_target: float | None = None, kl_horizon: float = 10000.0
) -> FixedKLController | AdaptiveKLController:
    """A fixed controller, or an adaptive one when ``kl_target`` is set (the modules' ``kl_*`` arguments)."""
    if kl_target is None:
        return FixedKLController(kl_coef)
    return AdaptiveKLController(kl_coef, kl_target, kl_horizon)
