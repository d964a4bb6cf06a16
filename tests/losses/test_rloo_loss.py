"""RLOO math by hand: leave-one-out advantages, the (clipped) policy loss, reward shaping, KL controllers."""

from __future__ import annotations

import math

import pytest
import torch

from moslim_pl.errors import MoslimError
from moslim_pl.losses.kl import AdaptiveKLController, FixedKLController, shape_rewards
from moslim_pl.losses.rloo import rloo_advantages, rloo_loss, scale_advantages


def test_advantages_k2_by_hand() -> None:
    # prompt 0: (1, 3); prompt 1: (0, -2): each sample minus its only sibling
    advantages = rloo_advantages(torch.tensor([1.0, 3.0, 0.0, -2.0]), k=2)
    torch.testing.assert_close(advantages, torch.tensor([-2.0, 2.0, 2.0, -2.0]))


def test_advantages_k3_by_hand() -> None:
    # prompt 0: 1 - (2+6)/2, 2 - (1+6)/2, 6 - (1+2)/2; prompt 1: 0 - 3/2, 0 - 3/2, 3 - 0
    advantages = rloo_advantages(torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]), k=3)
    torch.testing.assert_close(advantages, torch.tensor([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]))
    torch.testing.assert_close(advantages.reshape(2, 3).sum(-1), torch.zeros(2))


def test_advantages_refuse_bad_k() -> None:
    with pytest.raises(MoslimError, match="at least 2 samples"):
        rloo_advantages(torch.zeros(4), k=1)
    with pytest.raises(MoslimError, match=r"\[B \* k\]"):
        rloo_advantages(torch.zeros(5), k=2)


# Two sequences: row 0 has two response tokens (its third column is padding), row 1 has three.
LOGPROBS = torch.tensor([[-1.0, -2.0, -5.0], [-0.5, -0.5, -1.0]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
ADVANTAGES = torch.tensor([2.0, -1.0])


def test_loss_without_clipping_by_hand() -> None:
    logprobs = LOGPROBS.clone().requires_grad_(True)
    loss, stats = rloo_loss(logprobs, LOGPROBS, ADVANTAGES, MASK)
    # -mean(A_i * sum_t logp): row 0: 2 * (-3) = -6, row 1: -1 * (-2) = 2; the padded -5 is ignored
    assert loss.item() == pytest.approx(2.0)
    assert stats["clip_fraction"].item() == 0.0 and stats["ratio"].item() == pytest.approx(1.0)
    loss.backward()
    # d loss / d logp_{i,t} = -A_i / N on response tokens, 0 on padding
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.0, -1.0, 0.0], [0.5, 0.5, 0.5]]))


def test_loss_with_clipping_by_hand() -> None:
    ratios = torch.tensor([[1.5, 1.0, 1.0], [0.5, 1.1, 1.0]])
    old = LOGPROBS - ratios.log()
    logprobs = LOGPROBS.clone().requires_grad_(True)
    loss, stats = rloo_loss(logprobs, old, ADVANTAGES, MASK, clip_ratio=0.2)
    # row 0 (A=2): min(1.5*2, 1.2*2) = 2.4 (clipped), min(2, 2) = 2 -> 4.4
    # row 1 (A=-1): min(-0.5, -0.8) = -0.8 (clipped), -1.1 (inside), -1 -> -2.9
    assert loss.item() == pytest.approx(-(4.4 - 2.9) / 2)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 5)
    assert stats["ratio"].item() == pytest.approx((1.5 + 1 + 0.5 + 1.1 + 1) / 5)
    loss.backward()
    # clipped tokens get no gradient; the others d/dlogp (-rho * A / N) = -rho * A / 2
    expected = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.55, 0.5]])
    torch.testing.assert_close(logprobs.grad, expected)


def test_on_policy_clipping_has_the_reinforce_gradient() -> None:
    grads = []
    for clip_ratio in (None, 0.2):
        logprobs = LOGPROBS.clone().requires_grad_(True)
        loss, _ = rloo_loss(logprobs, LOGPROBS, ADVANTAGES, MASK, clip_ratio=clip_ratio)
        loss.backward()
        grads.append(logprobs.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_gradient_step_raises_positive_advantage_sample() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, requires_grad=True)  # two sequences, three tokens, vocabulary 5
    tokens = torch.tensor([[1, 2, 3], [1, 2, 3]])
    mask = torch.ones(2, 3, dtype=torch.long)

    def sequence_logprob() -> torch.Tensor:
        return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    before = sequence_logprob().detach().sum(-1)
    loss, _ = rloo_loss(sequence_logprob(), before.new_zeros(2, 3), torch.tensor([1.0, -1.0]), mask)
    loss.backward()
    with torch.no_grad():
        logits -= 0.5 * logits.grad
    after = sequence_logprob().detach().sum(-1)
    assert after[0] > before[0]  # advantage +1: more likely
    assert after[1] < before[1]  # advantage -1: less likely


def test_shape_rewards_is_detached_penalty() -> None:
    kl = torch.tensor([2.0, -2.0], requires_grad=True)
    shaped = shape_rewards(torch.tensor([1.0, 2.0]), kl, kl_coef=0.5)
    torch.testing.assert_close(shaped, torch.tensor([0.0, 3.0]))
    assert not shaped.requires_grad


def test_adaptive_kl_controller_by_hand() -> None:
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # KL 9: error 0.5 clipped to 0.2 -> beta * (1 + 0.2 * 1000 / 10000)
    assert controller.update(9.0, n_steps=1000) == pytest.approx(0.102)
    # KL 6.6: error 0.1 -> * 1.01
    assert controller.update(6.6, n_steps=1000) == pytest.approx(0.102 * 1.01)
    # KL 0: error -1 clipped to -0.2 -> * (1 - 0.2 * 500 / 10000)
    assert controller.update(0.0, n_steps=500) == pytest.approx(0.102 * 1.01 * 0.99)
    restored = AdaptiveKLController(0.5, target=6.0, horizon=10000)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value
    assert math.isclose(restored.update(6.0, n_steps=100), controller.value)  # at target: unchanged


def test_fixed_kl_controller_and_bad_arguments() -> None:
    controller = FixedKLController(0.05)
    assert controller.update(100.0, n_steps=64) == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(controller.state_dict())
    assert other.value == 0.05
    with pytest.raises(MoslimError):
        FixedKLController(-1.0)
    with pytest.raises(MoslimError, match="target > 0"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
    with pytest.raises(MoslimError, match="clip_ratio"):
        rloo_loss(LOGPROBS, LOGPROBS, ADVANTAGES, MASK, clip_ratio=0.0)


def test_scale_advantages_divides_by_the_batch_std():
    # two groups of k=2: advantages (0.1, -0.1, 0.3, -0.3); mean 0, population std sqrt((0.01+0.01+0.09+0.09)/4)
    advantages = torch.tensor([0.1, -0.1, 0.3, -0.3])
    std = (0.2 / 4) ** 0.5  # 0.223607
    scaled = scale_advantages(advantages)
    torch.testing.assert_close(scaled, torch.tensor([0.1, -0.1, 0.3, -0.3]) / std)
    torch.testing.assert_close(
        scaled, torch.tensor([0.447214, -0.447214, 1.341641, -1.341641]), atol=1e-5, rtol=0
    )
    # same reward ordering whatever the units: rewards x 100 give the same scaled advantages
    torch.testing.assert_close(scale_advantages(advantages * 100), scaled)
    # a batch with no signal stays 0 (no division by zero)
    assert torch.equal(scale_advantages(torch.zeros(4)), torch.zeros(4))
