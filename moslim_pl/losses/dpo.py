"""DPO: Direct Preference Optimization (Rafailov et al. 2023), the loss of Online-DPO.

With sequence log-probabilities (sums over the response tokens) of ``B`` (chosen, rejected) pairs under
the policy being trained and under the frozen reference::

    loss, stats = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)

Pure torch: no Lightning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moslim_pl.errors import MoslimError


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The sigmoid DPO loss ``mean_b -log sigmoid(beta * ((pc - rc) - (pr - rr)))``.

    ``pc, pr`` are the policy's sequence log-probs of the chosen and rejected responses (with grad),
    ``rc, rr`` the reference's (detached here). ``beta * (p - r)`` is the implicit reward of a response;
    the loss pushes the chosen one's above the rejected one's.

    Args:
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: ``[B]`` each,
            ``B >= 1``.
        beta: the DPO temperature (> 0); larger keeps the policy closer to the reference.

    Returns:
        ``(loss, stats)``: a scalar loss and detached scalars ``chosen_reward`` and ``rejected_reward``
        (mean implicit rewards), ``margin`` (their mean difference) and ``accuracy`` (share of pairs whose
        chosen implicit reward is strictly above the rejected one's).
    """
    if beta <= 0:
        raise MoslimError(f"DPO needs beta > 0, got {beta}")
    shapes = {
        tuple(t.shape)
        for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    }
    if len(shapes) != 1 or policy_chosen_logps.dim() != 1 or policy_chosen_logps.numel() == 0:
        raise MoslimError(f"DPO needs four non-empty [B] log-prob tensors of one shape, got {sorted(shapes)}")
    chosen = beta * (policy_chosen_logps - ref_chosen_logps.detach())
    rejected = beta * (policy_rejected_logps - ref_rejected_logps.detach())
    loss = -F.logsigmoid(chosen - rejected).mean()
    with torch.no_grad():
        stats = {
            "chosen_reward": chosen.mean(),
            "rejected_reward": rejected.mean(),
            "margin": (chosen - rejected).mean(),
            "accuracy": (chosen > rejected).float().mean(),
        }
    return loss, stats
