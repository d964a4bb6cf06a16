"""Pure-torch losses (no Lightning)."""

from moslim_pl.losses.classification import multi_head_cross_entropy, pair_scores
from moslim_pl.losses.dpo import dpo_loss
from moslim_pl.losses.pairwise import bradley_terry_loss, pair_accuracy
from moslim_pl.losses.rloo import (
    AdaptiveKLController,
    FixedKLController,
    rloo_advantages,
    rloo_loss,
    shape_rewards,
)

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "bradley_terry_loss",
    "dpo_loss",
    "multi_head_cross_entropy",
    "pair_accuracy",
    "pair_scores",
    "rloo_advantages",
    "rloo_loss",
    "shape_rewards",
]
