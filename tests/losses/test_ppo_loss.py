"""PPO math by hand: token rewards, GAE, whitening, the clipped policy and value losses."""

from __future__ import annotations

import math

import pytest
import torch

from moslim_pl.errors import MoslimError
from moslim_pl.losses.ppo import (
    explained_variance,
    gae,
    ppo_policy_loss,
    ppo_value_loss,
    token_rewards,
    whiten,
)

# Row 0 has three response tokens; row 1 only two (its third column is padding, filled with garbage
# that must never be read).
GAE_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
GAE_REWARDS = torch.tensor([[0.1, -0.2, 1.0], [0.0, 2.0, 9.0]])
GAE_VALUES = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 7.0]])


def test_token_rewards_by_hand() -> None:
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, -0.2, 5.0]], requires_grad=True)
    rewards = token_rewards(torch.tensor([2.0, -1.0]), kl, GAE_MASK, kl_coef=0.5)
    # -0.5 * kl everywhere; the reward lands on each row's last token (column 2, resp. 1); padding is 0
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 2.0], [-0.2, 0.1 - 1.0, 0.0]])
    torch.testing.assert_close(rewards, expected)
    assert not rewards.requires_grad
    with pytest.raises(MoslimError, match="token_rewards"):
        token_rewards(torch.zeros(3), kl, GAE_MASK, kl_coef=0.5)


def test_gae_by_hand() -> None:
    advantages, returns = gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, gamma=0.9, lam=0.5)
    # row 0, gamma * lam = 0.45, V after the last token is 0:
    #   t=2: delta = 1.0 + 0.9 * 0 - 0.3 = 0.7;          A = 0.7
    #   t=1: delta = -0.2 + 0.9 * 0.3 - 0.4 = -0.33;     A = -0.33 + 0.45 * 0.7 = -0.015
    #   t=0: delta = 0.1 + 0.9 * 0.4 - 0.5 = -0.04;      A = -0.04 + 0.45 * -0.015 = -0.04675
    # row 1 ends at t=1 (the 9.0 reward and 7.0 value of the padding are ignored):
    #   t=1: delta = 2.0 - 0.5 = 1.5;                    A = 1.5
    #   t=0: delta = 0.0 + 0.9 * 0.5 - 1.0 = -0.55;      A = -0.55 + 0.45 * 1.5 = 0.125
    expected = torch.tensor([[-0.04675, -0.015, 0.7], [0.125, 1.5, 0.0]])
    torch.testing.assert_close(advantages, expected)
    # returns = A + V on the response tokens, 0 on padding
    torch.testing.assert_close(returns, torch.tensor([[0.45325, 0.385, 1.0], [1.125, 2.0, 0.0]]))


def test_gae_limits() -> None:
    # gamma = lam = 1: A_t = (sum of rewards from t on) - V_t, the returns are the rewards-to-go
    advantages, returns = gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[0.9, 0.8, 1.0], [2.0, 2.0, 0.0]]))
    torch.testing.assert_close(advantages, torch.tensor([[0.4, 0.4, 0.7], [1.0, 1.5, 0.0]]))
    # lam = 0: one-step TD errors r_t + V_{t+1} - V_t
    advantages, _ = gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, gamma=1.0, lam=0.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.0, -0.3, 0.7], [-0.5, 1.5, 0.0]]))


def test_gae_refuses_bad_arguments() -> None:
    with pytest.raises(MoslimError, match="gamma and lam"):
        gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, gamma=1.5, lam=0.9)
    with pytest.raises(MoslimError, match="one shape"):
        gae(GAE_REWARDS, GAE_VALUES[:, :2], GAE_MASK, gamma=1.0, lam=0.9)


def test_whiten_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [5.0, 100.0, -100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # masked values 1, 2, 3, 5: mean 2.75, population variance (1.75^2 + .75^2 + .25^2 + 2.25^2) / 4 = 2.1875
    std = math.sqrt(2.1875)
    expected = torch.tensor([[-1.75 / std, -0.75 / std, 0.25 / std], [2.25 / std, 0.0, 0.0]])
    torch.testing.assert_close(whiten(x, mask), expected)
    unshifted = whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(unshifted, (expected + 2.75) * mask)
    white = whiten(x, mask)
    assert white[mask.bool()].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert white[mask.bool()].var(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)


# Two sequences, five response tokens: row 0 has two (column 2 is padding), row 1 three.
POLICY_MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
POLICY_ADVANTAGES = torch.tensor([[2.0, 2.0, 7.0], [-1.0, -1.0, -1.0]])
RATIOS = torch.tensor([[1.5, 0.7, 3.0], [0.5, 1.3, 1.0]])
LOGPROBS = torch.tensor([[-1.0, -2.0, -0.1], [-0.5, -0.5, -1.0]])


def test_policy_loss_both_sides_of_the_clip() -> None:
    old = LOGPROBS - RATIOS.log()
    logprobs = LOGPROBS.clone().requires_grad_(True)
    loss, stats = ppo_policy_loss(logprobs, old, POLICY_ADVANTAGES, POLICY_MASK, clip_ratio=0.2)
    # per token max(-A * rho, -A * clip(rho, 0.8, 1.2)):
    #   A=+2, rho=1.5 (above 1 + eps):  max(-3.0, -2.4) = -2.4   clipped, no gradient
    #   A=+2, rho=0.7 (below 1 - eps):  max(-1.4, -1.6) = -1.4   unclipped: a worse ratio is never hidden
    #   A=-1, rho=0.5 (below 1 - eps):  max(0.5, 0.8)   = 0.8    clipped, no gradient
    #   A=-1, rho=1.3 (above 1 + eps):  max(1.3, 1.2)   = 1.3    unclipped
    #   A=-1, rho=1.0:                  1.0
    # the padded column (A=7, rho=3) is ignored; mean over 5 tokens
    assert loss.item() == pytest.approx((-2.4 - 1.4 + 0.8 + 1.3 + 1.0) / 5)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 5)
    assert stats["ratio"].item() == pytest.approx((1.5 + 0.7 + 0.5 + 1.3 + 1.0) / 5)
    k3 = [r - 1 - math.log(r) for r in (1.5, 0.7, 0.5, 1.3, 1.0)]
    assert stats["approx_kl"].item() == pytest.approx(sum(k3) / 5)
    loss.backward()
    # unclipped tokens: d(-A * exp(logp - old)) / dlogp / 5 = -A * rho / 5
    expected = torch.tensor([[0.0, -2 * 0.7 / 5, 0.0], [0.0, 1.3 / 5, 1.0 / 5]])
    torch.testing.assert_close(logprobs.grad, expected)


def test_policy_loss_on_policy_is_the_policy_gradient() -> None:
    logprobs = LOGPROBS.clone().requires_grad_(True)
    loss, stats = ppo_policy_loss(logprobs, LOGPROBS, POLICY_ADVANTAGES, POLICY_MASK, clip_ratio=0.2)
    # rho = 1 everywhere: loss = -mean(A), gradient -A / 5 on every response token
    assert loss.item() == pytest.approx(-(2.0 + 2.0 - 3.0) / 5)
    assert stats["clip_fraction"].item() == 0.0 and stats["approx_kl"].item() == pytest.approx(0.0)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, -POLICY_ADVANTAGES * POLICY_MASK / 5)
    with pytest.raises(MoslimError, match="clip_ratio"):
        ppo_policy_loss(logprobs, LOGPROBS, POLICY_ADVANTAGES, POLICY_MASK, clip_ratio=0.0)


# Three response tokens: row 0 has two, row 1 one.
VALUE_MASK = torch.tensor([[1, 1], [1, 0]])
RETURNS = torch.tensor([[1.0, 0.0], [2.0, 9.0]])
OLD_VALUES = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
VALUES = torch.tensor([[1.5, 0.6], [1.9, 3.0]])


def test_value_loss_by_hand() -> None:
    values = VALUES.clone().requires_grad_(True)
    loss, stats = ppo_value_loss(values, OLD_VALUES, RETURNS, VALUE_MASK, value_clip=0.2)
    # V=1.5, old 0.5, G=1: (V-G)^2 = 0.25, V_clip = 0.7: 0.09 -> 0.25 (moved away past the clip: unclipped)
    # V=0.6, old 0.5, G=0: 0.36, V_clip = 0.6: 0.36 -> 0.36
    # V=1.9, old 1.0, G=2: 0.01, V_clip = 1.2: 0.64 -> 0.64 (clipped: no gradient)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.36 + 0.64) / 3)
    assert stats["value_clip_fraction"].item() == pytest.approx(1 / 3)
    loss.backward()
    # d 0.5 (V - G)^2 / 3 = (V - G) / 3 where the unclipped error is taken
    torch.testing.assert_close(values.grad, torch.tensor([[0.5 / 3, 0.6 / 3], [0.0, 0.0]]))


def test_value_loss_without_clipping() -> None:
    loss, stats = ppo_value_loss(VALUES, OLD_VALUES, RETURNS, VALUE_MASK, value_clip=None)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.36 + 0.01) / 3)
    assert stats["value_clip_fraction"].item() == 0.0
    with pytest.raises(MoslimError, match="value_clip"):
        ppo_value_loss(VALUES, OLD_VALUES, RETURNS, VALUE_MASK, value_clip=-1.0)


def test_explained_variance() -> None:
    assert explained_variance(RETURNS, RETURNS, VALUE_MASK).item() == pytest.approx(1.0)
    assert explained_variance(torch.zeros(2, 2), RETURNS, VALUE_MASK).item() == pytest.approx(0.0)
    # returns 1, 0, 2: variance 2/3; errors G - V = -0.5, -0.6, 0.1: mean -1/3, variance 0.62/3 - 1/9
    expected = 1 - (0.62 / 3 - 1 / 9) / (2 / 3)
    assert explained_variance(VALUES, RETURNS, VALUE_MASK).item() == pytest.approx(expected)
    assert explained_variance(VALUES, torch.ones(2, 2), VALUE_MASK).item() == 0.0
