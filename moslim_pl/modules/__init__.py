"""LightningModules: one training stage per file."""

from moslim_pl.modules.reward_model import RewardModelModule

__all__ = ["RewardModelModule"]

from moslim_pl.modules.rloo import RLOOModule  # noqa: E402

__all__ += ["RLOOModule"]

from moslim_pl.modules.sft import SFTModule  # noqa: E402

__all__ += ["SFTModule"]
