"""Pure-torch losses and their pieces (no Lightning): one file per algorithm, KL in ``kl.py``."""

from moslim_pl.losses.classification import multi_head_cross_entropy, pair_scores
from moslim_pl.losses.dpo import dpo_loss
from moslim_pl.losses.kl import (
    KL_KINDS,
    AdaptiveKLController,
    FixedKLController,
    kl_controller,
    kl_estimate,
    shape_rewards,
    token_kl,
)
from moslim_pl.losses.pairwise import (
    bradley_terry_loss,
    expand_pairs,
    pair_accuracy,
    within_prompt_rank_counts,
)
from moslim_pl.losses.ppo import (
    explained_variance,
    gae,
    last_token_index,
    masked_mean,
    masked_var,
    ppo_policy_loss,
    ppo_value_loss,
    token_rewards,
    whiten,
)
from moslim_pl.losses.rloo import rloo_advantages, rloo_loss, scale_advantages
from moslim_pl.losses.sft import response_nll

__all__ = [
    "KL_KINDS",
    "AdaptiveKLController",
    "FixedKLController",
    "bradley_terry_loss",
    "dpo_loss",
    "expand_pairs",
    "explained_variance",
    "gae",
    "kl_controller",
    "kl_estimate",
    "last_token_index",
    "masked_mean",
    "masked_var",
    "multi_head_cross_entropy",
    "pair_accuracy",
    "pair_scores",
    "ppo_policy_loss",
    "ppo_value_loss",
    "response_nll",
    "rloo_advantages",
    "rloo_loss",
    "scale_advantages",
    "shape_rewards",
    "token_kl",
    "token_rewards",
    "whiten",
    "within_prompt_rank_counts",
]
