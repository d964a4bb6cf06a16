"""Pure-torch losses (no Lightning)."""

from moslim_pl.losses.classification import multi_head_cross_entropy, pair_scores

__all__ = ["multi_head_cross_entropy", "pair_scores"]
