"""Pure-torch losses (no Lightning)."""

from moslim_pl.losses.classification import multi_head_cross_entropy, pair_scores

__all__ = ["multi_head_cross_entropy", "pair_scores"]

from moslim_pl.losses.rloo import (  # noqa: E402
    AdaptiveKLController,
    FixedKLController,
    rloo_advantages,
    rloo_loss,
    shape_rewards,
)

__all__ += ["AdaptiveKLController", "FixedKLController", "rloo_advantages", "rloo_loss", "shape_rewards"]
