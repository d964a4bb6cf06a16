"""LightningModules: one training stage per file."""

from moslim_pl.modules.online_dpo import OnlineDPOModule
from moslim_pl.modules.ppo import PPOModule
from moslim_pl.modules.reward_model import RewardModelModule
from moslim_pl.modules.rloo import RLOOModule
from moslim_pl.modules.sft import SFTModule

__all__ = ["OnlineDPOModule", "PPOModule", "RLOOModule", "RewardModelModule", "SFTModule"]
