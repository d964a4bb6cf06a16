"""Hand-computed checks of the running probability statistics in ``moslim_pl.rewards.stats``."""

from __future__ import annotations

import math

import pytest
import torch

from moslim_pl.rewards.stats import StatSums, add_sums, ema_update, probability_sums

F64 = torch.float64


def _probs() -> torch.Tensor:
    # 2 rows, 2 heads (3 and 2 levels, head 1 padded to L = 3)
    return torch.tensor(
        [
            [[0.25, 0.5, 0.25], [0.75, 0.25, 0.0]],
            [[0.75, 0.0, 0.25], [0.25, 0.75, 0.0]],
        ]
    )


def test_probability_sums_hand_values() -> None:
    sums = probability_sums(_probs())
    # total: column sums, e.g. head 0 level 0: .25 + .75 = 1
    torch.testing.assert_close(sums.total, torch.tensor([[1.0, 0.5, 0.5], [1.0, 1.0, 0.0]], dtype=F64))
    # total_sq: .0625 + .5625 = .625;  .25 + 0 = .25;  .0625 + .0625 = .125
    torch.testing.assert_close(
        sums.total_sq, torch.tensor([[0.625, 0.25, 0.125], [0.625, 0.625, 0.0]], dtype=F64)
    )
    assert sums.count.dtype == F64 and sums.count.shape == () and sums.count.item() == 2.0


def test_moments_hand_values() -> None:
    mean, std = probability_sums(_probs()).moments()
    # mean = total / 2;  var = total_sq / 2 - mean^2
    # head 0: level 0: .3125 - .25 = .0625 -> .25;  level 1: .125 - .0625 = .0625 -> .25;  level 2: 0
    # head 1: levels 0 and 1 like head 0 level 0 -> .25;  padded level: 0
    torch.testing.assert_close(mean, torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]], dtype=F64))
    torch.testing.assert_close(std, torch.tensor([[0.25, 0.25, 0.0], [0.25, 0.25, 0.0]], dtype=F64))


def test_sums_are_detached_float64() -> None:
    probs = _probs().requires_grad_(True)
    sums = probability_sums(probs)
    assert all(t.dtype == F64 and not t.requires_grad for t in sums)


def test_probability_sums_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"\[N, K, L\]"):
        probability_sums(torch.zeros(2, 3))


def test_variance_clamped_at_zero() -> None:
    # a constant, non-dyadic probability: E[p^2] - E[p]^2 may round below 0; the std must not be NaN
    probs = torch.full((7, 1, 2), 0.1, dtype=F64)
    _, std = probability_sums(probs).moments()
    assert torch.isfinite(std).all() and (std >= 0).all() and (std < 1e-6).all()
    manual = StatSums(
        torch.tensor([[1.0]], dtype=F64), torch.tensor([[0.0]], dtype=F64), torch.tensor(2.0, dtype=F64)
    )
    assert manual.moments()[1].item() == 0.0  # var = 0/2 - 0.5^2 < 0 -> clamped


def test_add_sums_equals_concatenation() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(10, 3, 4, generator=generator), dim=-1)
    combined = add_sums(probability_sums(probs[:3]), probability_sums(probs[3:]))
    whole = probability_sums(probs)
    for a, b in zip(combined, whole, strict=True):
        torch.testing.assert_close(a, b)
    mean, std = combined.moments()
    torch.testing.assert_close(mean, probs.double().mean(dim=0))
    torch.testing.assert_close(std, probs.double().std(dim=0, unbiased=False))


def test_ema_update_hand_values() -> None:
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    new_mean, new_std = ema_update(mean, std, torch.tensor([0.25]), torch.tensor([0.5]), momentum=0.5)
    # mean: .5*.5 + .5*.25 = .375
    # var: .5*.0625 + .5*.25 + .5*.5*(.25 - .5)^2 = .03125 + .125 + .015625 = .171875
    torch.testing.assert_close(new_mean, torch.tensor([0.375]))
    torch.testing.assert_close(new_std, torch.tensor([math.sqrt(0.171875)]))


def test_ema_with_count_weight_equals_pooled_moments() -> None:
    # momentum = n_b / (n_a + n_b) makes the mixture exact: EMA of halves == moments of the whole
    generator = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(10, 2, 3, generator=generator, dtype=F64), dim=-1)
    mean_a, std_a = probability_sums(probs[:4]).moments()
    mean_b, std_b = probability_sums(probs[4:]).moments()
    new_mean, new_std = ema_update(mean_a, std_a, mean_b, std_b, momentum=6 / 10)
    mean, std = probability_sums(probs).moments()
    torch.testing.assert_close(new_mean, mean)
    torch.testing.assert_close(new_std, std)


def test_momentum_one_returns_batch_stats() -> None:
    batch_mean, batch_std = torch.tensor([[0.3, 0.7]]), torch.tensor([[0.1, 0.2]])
    new_mean, new_std = ema_update(torch.zeros(1, 2), torch.ones(1, 2), batch_mean, batch_std, momentum=1.0)
    torch.testing.assert_close(new_mean, batch_mean)
    torch.testing.assert_close(new_std, batch_std)


def test_ema_keeps_running_dtype() -> None:
    new_mean, new_std = ema_update(
        torch.zeros(2), torch.ones(2), torch.ones(2, dtype=F64), torch.ones(2, dtype=F64), momentum=0.5
    )
    assert new_mean.dtype == torch.float32 and new_std.dtype == torch.float32


@pytest.mark.parametrize("momentum", [0.0, -0.1, 1.5, float("nan")])
def test_ema_rejects_bad_momentum(momentum: float) -> None:
    with pytest.raises(ValueError, match="momentum"):
        ema_update(torch.zeros(1), torch.ones(1), torch.zeros(1), torch.ones(1), momentum=momentum)


def test_ema_converges_to_constant_batches() -> None:
    mean, std = torch.zeros(2, 3, dtype=F64), torch.ones(2, 3, dtype=F64)
    batch_mean = torch.full((2, 3), 0.4, dtype=F64)
    batch_std = torch.full((2, 3), 0.1, dtype=F64)
    # the mean error shrinks by (1 - m) each step: 0.9^300 ~ 2e-14
    for _ in range(300):
        mean, std = ema_update(mean, std, batch_mean, batch_std, momentum=0.1)
    torch.testing.assert_close(mean, batch_mean)
    torch.testing.assert_close(std, batch_std)
