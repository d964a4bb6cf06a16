"""LightningModules: one training stage per file."""

from moslim_pl.modules.reward_model import RewardModelModule

__all__ = ["RewardModelModule"]
