"""DPO loss by hand: values, statistics and the direction of its gradient."""

from __future__ import annotations

import math

import pytest
import torch

from moslim_pl.errors import MoslimError
from moslim_pl.losses.dpo import dpo_loss


def test_policy_equal_to_reference_gives_log_2() -> None:
    logps = torch.tensor([-3.0, -1.5, -7.0])
    loss, stats = dpo_loss(logps, logps - 1.0, logps, logps - 1.0, beta=0.1)
    # every implicit reward is 0: -log sigmoid(0) = log 2, no pair ranked right yet
    assert loss.item() == pytest.approx(math.log(2.0))
    assert stats["margin"].item() == pytest.approx(0.0)
    assert stats["accuracy"].item() == 0.0


def test_two_pairs_by_hand() -> None:
    beta = 0.5
    policy_chosen = torch.tensor([-1.0, -2.0])
    policy_rejected = torch.tensor([-3.0, -1.0])
    reference = torch.tensor([-2.0, -2.0])
    loss, stats = dpo_loss(policy_chosen, policy_rejected, reference, reference, beta)
    # pair 0: chosen 0.5 * (-1 + 2) = 0.5, rejected 0.5 * (-3 + 2) = -0.5, z = 1
    # pair 1: chosen 0.5 * (-2 + 2) = 0,   rejected 0.5 * (-1 + 2) = 0.5,  z = -0.5
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(expected)  # 0.643669...
    assert loss.item() == pytest.approx(0.643669, abs=1e-6)
    assert stats["chosen_reward"].item() == pytest.approx(0.25)
    assert stats["rejected_reward"].item() == pytest.approx(0.0)
    assert stats["margin"].item() == pytest.approx(0.25)
    assert stats["accuracy"].item() == pytest.approx(0.5)


def test_gradient_raises_chosen_and_lowers_rejected() -> None:
    beta = 0.5
    policy_chosen = torch.tensor([-1.0, -2.0], requires_grad=True)
    policy_rejected = torch.tensor([-3.0, -1.0], requires_grad=True)
    reference = torch.tensor([-2.0, -2.0], requires_grad=True)
    loss, _ = dpo_loss(policy_chosen, policy_rejected, reference, reference, beta)
    loss.backward()
    # d loss / d pc_b = -beta * sigmoid(-z_b) / B, and the opposite for the rejected log-prob
    sig = torch.sigmoid(-torch.tensor([1.0, -0.5]))
    torch.testing.assert_close(policy_chosen.grad, -beta * sig / 2)
    torch.testing.assert_close(policy_rejected.grad, beta * sig / 2)
    assert (policy_chosen.grad < 0).all() and (policy_rejected.grad > 0).all()
    assert reference.grad is None  # the reference is detached
    # the badly ranked pair (1) pulls harder than the well ranked one (0)
    assert policy_chosen.grad[1].abs() > policy_chosen.grad[0].abs()

    # one gradient step on the policy's log-probs lowers the loss
    with torch.no_grad():
        stepped, _ = dpo_loss(
            policy_chosen - policy_chosen.grad,
            policy_rejected - policy_rejected.grad,
            reference,
            reference,
            beta,
        )
    assert stepped < loss


@pytest.mark.parametrize(
    ("shapes", "beta", "match"),
    [
        (((2,), (2,), (2,), (2,)), 0.0, "beta > 0"),
        (((2,), (3,), (2,), (2,)), 0.1, "one shape"),
        (((0,), (0,), (0,), (0,)), 0.1, "non-empty"),
        (((2, 1), (2, 1), (2, 1), (2, 1)), 0.1, r"\[B\]"),
    ],
)
def test_bad_inputs(shapes: tuple, beta: float, match: str) -> None:
    with pytest.raises(MoslimError, match=match):
        dpo_loss(*(torch.zeros(s) for s in shapes), beta=beta)
