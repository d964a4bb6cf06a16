"""Hand-computed checks of the reward mappings in ``moslim_pl.rewards.mapping``.

The shared example has 2 rows and 2 heads: head 0 has 3 levels, head 1 has 2, so L = 3 and head 1's
level 2 is padding (exact zero). Values are dyadic so the arithmetic in the comments is exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from moslim_pl.rewards.mapping import (
    MAPPINGS,
    MappedReward,
    expected_level_mapping,
    gaussian_mapping,
    linear_mapping,
    log_prob_mapping,
    map_rewards,
    resolve_targets,
)

F64 = torch.float64


def _probs() -> torch.Tensor:
    # row 0: head 0 [.25 .5 .25], head 1 [.75 .25 | 0];  row 1: head 0 [.125 .125 .75], head 1 [.5 .5 | 0]
    return torch.tensor(
        [
            [[0.25, 0.5, 0.25], [0.75, 0.25, 0.0]],
            [[0.125, 0.125, 0.75], [0.5, 0.5, 0.0]],
        ],
        dtype=F64,
    )


def _targets() -> torch.Tensor:
    # row 0 names both dimensions; row 1 names only head 0
    return torch.tensor([[1, 0], [2, -1]])


NUM_LEVELS = torch.tensor([3, 2])
MEAN = torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]], dtype=F64)
STD = torch.tensor([[0.25, 0.5, 0.25], [0.125, 0.25, 0.0]], dtype=F64)


def _assert_mapped(
    out: MappedReward, reward: list[float], components: list[list[float]], mask: list[list[bool]]
) -> None:
    torch.testing.assert_close(out.reward, torch.tensor(reward, dtype=F64))
    torch.testing.assert_close(out.components, torch.tensor(components, dtype=F64))
    assert out.mask.dtype == torch.bool
    assert out.mask.tolist() == mask


def test_gaussian_hand_values() -> None:
    out = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0)
    # row 0: head 0 t=1: (0.5 - 0.25) / 0.5 = 0.5;  head 1 t=0: (0.75 - 0.5) / 0.125 = 2;  mean 1.25
    # row 1: head 0 t=2: (0.75 - 0.25) / 0.25 = 2;  head 1 masked;  mean over 1 term = 2
    _assert_mapped(out, [1.25, 2.0], [[0.5, 2.0], [2.0, 0.0]], [[True, True], [True, False]])


def test_gaussian_default_eps() -> None:
    out = gaussian_mapping(_probs(), _targets(), MEAN, STD)
    # row 1: 0.5 / (0.25 + 1e-6)
    assert out.reward[1].item() == pytest.approx(0.5 / (0.25 + 1e-6), rel=1e-12)


def test_gaussian_sigma_floor_hand_values() -> None:
    out = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0, sigma_floor=0.4)
    # row 0: head 0 sigma 0.5 stays: 0.5;  head 1 sigma 0.125 -> 0.4: 0.25 / 0.4 = 0.625;  mean 0.5625
    # row 1: head 0 sigma 0.25 -> 0.4: 0.5 / 0.4 = 1.25
    _assert_mapped(out, [0.5625, 1.25], [[0.5, 0.625], [1.25, 0.0]], [[True, True], [True, False]])


def test_gaussian_z_clip_hand_values() -> None:
    out = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0, z_clip=1.5)
    # the z-terms 0.5, 2 | 2 of test_gaussian_hand_values, each clamped to [-1.5, 1.5]
    _assert_mapped(out, [1.0, 1.5], [[0.5, 1.5], [1.5, 0.0]], [[True, True], [True, False]])
    low = gaussian_mapping(1 - _probs(), _targets(), MEAN, STD, eps=0.0, z_clip=1.5)
    # row 0 head 1: (0.25 - 0.5) / 0.125 = -2 -> -1.5;  head 0: (0.5 - 0.25) / 0.5 = 0.5
    assert low.components[0].tolist() == [0.5, -1.5]


def test_gaussian_guards_default_off_and_reach_the_dispatcher() -> None:
    plain = gaussian_mapping(_probs(), _targets(), MEAN, STD)
    guarded = map_rewards("gaussian", _probs(), _targets(), mean=MEAN, std=STD, sigma_floor=0.4, z_clip=1.0)
    assert torch.equal(
        gaussian_mapping(_probs(), _targets(), MEAN, STD, sigma_floor=0.0, z_clip=None).reward, plain.reward
    )
    # floor then clip: row 0 -> 0.5 and min(0.625, 1); row 1 -> min(1.25, 1)
    torch.testing.assert_close(guarded.reward, torch.tensor([0.5625, 1.0], dtype=F64), atol=1e-5, rtol=0)


def test_gaussian_min_aggregation_hand_values() -> None:
    out = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0, aggregation="min")
    # the z-terms 0.5, 2 | 2 of test_gaussian_hand_values: row 0 min(0.5, 2) = 0.5 (the mean was 1.25: the
    # hit of head 1 no longer lifts the reward); row 1 has one named term, min = mean = 2
    _assert_mapped(out, [0.5, 2.0], [[0.5, 2.0], [2.0, 0.0]], [[True, True], [True, False]])
    # a miss (-2 on head 1) next to a hit (+0.5): the mean would be -0.75, the minimum is the miss
    low = gaussian_mapping(1 - _probs(), _targets(), MEAN, STD, eps=0.0, aggregation="min")
    assert low.reward[0].item() == -2.0
    # the guards apply per term, before the minimum: z_clip 1.5 -> min(0.5, 1.5) and 1.5
    clipped = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0, z_clip=1.5, aggregation="min")
    assert clipped.reward.tolist() == [0.5, 1.5]


def test_min_aggregation_of_the_other_mappings_hand_values() -> None:
    # expected_level terms 0, -0.25 | -0.1875 -> min -0.25 | -0.1875
    out = expected_level_mapping(_probs(), _targets(), NUM_LEVELS, aggregation="min")
    _assert_mapped(out, [-0.25, -0.1875], [[0.0, -0.25], [-0.1875, 0.0]], [[True, True], [True, False]])
    # log_prob terms log .5, log .75 | log .75 -> log .5 | log .75
    out = log_prob_mapping(_probs(), _targets(), eps=0.0, aggregation="min")
    assert out.reward.tolist() == pytest.approx([math.log(0.5), math.log(0.75)])
    # a row naming nothing gets 0 under either aggregation, and the dispatcher passes the option on
    empty = torch.tensor([[-1, -1], [2, -1]])
    out = map_rewards("gaussian", _probs(), empty, mean=MEAN, std=STD, eps=0.0, aggregation="min")
    assert out.reward.tolist() == [0.0, 2.0]


def test_mean_aggregation_is_the_default_bit_for_bit() -> None:
    for kind in ("gaussian", "expected_level", "log_prob"):
        kwargs = {"mean": MEAN, "std": STD, "num_levels": NUM_LEVELS}
        plain = map_rewards(kind, _probs(), _targets(), **kwargs)
        explicit = map_rewards(kind, _probs(), _targets(), aggregation="mean", **kwargs)
        assert torch.equal(plain.reward, explicit.reward)


def test_unknown_aggregation() -> None:
    with pytest.raises(ValueError, match="unknown aggregation 'max'; expected one of mean, min"):
        map_rewards("gaussian", _probs(), _targets(), mean=MEAN, std=STD, aggregation="max")


def test_expected_level_hand_values() -> None:
    out = expected_level_mapping(_probs(), _targets(), NUM_LEVELS)
    # E: row 0 head 0 = 0*.25 + 1*.5 + 2*.25 = 1;  head 1 = 1*.25 = 0.25
    #    row 1 head 0 = 1*.125 + 2*.75 = 1.625;  head 1 = 0.5 (masked)
    # spans (num_levels - 1) = [2, 1]: head 1 is normalized by 1, not by the padded L - 1 = 2
    # row 0: -|1 - 1|/2 = 0, -|0.25 - 0|/1 = -0.25 -> mean -0.125;  row 1: -|1.625 - 2|/2 = -0.1875
    _assert_mapped(out, [-0.125, -0.1875], [[0.0, -0.25], [-0.1875, 0.0]], [[True, True], [True, False]])


def test_log_prob_hand_values() -> None:
    out = log_prob_mapping(_probs(), _targets(), eps=0.0)
    # row 0: (log .5 + log .75) / 2;  row 1: log .75
    row0 = (math.log(0.5) + math.log(0.75)) / 2
    _assert_mapped(
        out,
        [row0, math.log(0.75)],
        [[math.log(0.5), math.log(0.75)], [math.log(0.75), 0.0]],
        [[True, True], [True, False]],
    )


def test_log_prob_zero_probability_is_finite() -> None:
    # head 1's padded level has p = 0; log(0 + 1e-8) stays finite
    out = log_prob_mapping(_probs(), torch.tensor([[-1, 2], [-1, -1]]))
    assert out.reward[0].item() == pytest.approx(math.log(1e-8))
    assert out.reward[1].item() == 0.0


def test_linear_hand_values() -> None:
    weights = torch.tensor([1.0, 0.5], dtype=F64)
    out = linear_mapping(_probs(), weights, NUM_LEVELS)
    # row 0: 1 * 1/2 = 0.5, 0.5 * 0.25/1 = 0.125 -> sum 0.625
    # row 1: 1 * 1.625/2 = 0.8125, 0.5 * 0.5/1 = 0.25 -> sum 1.0625
    _assert_mapped(out, [0.625, 1.0625], [[0.5, 0.125], [0.8125, 0.25]], [[True, True], [True, True]])


def test_linear_zero_weight_masks_dimension() -> None:
    out = linear_mapping(_probs(), torch.tensor([1.0, 0.0]), NUM_LEVELS)
    # only head 0: row 0 1/2 = 0.5, row 1 1.625/2 = 0.8125
    _assert_mapped(out, [0.5, 0.8125], [[0.5, 0.0], [0.8125, 0.0]], [[True, False], [True, False]])


def _target_mappings() -> dict[str, dict]:
    return {
        "gaussian": {"mean": MEAN, "std": STD},
        "expected_level": {"num_levels": NUM_LEVELS},
        "log_prob": {},
    }


@pytest.mark.parametrize("kind", ["gaussian", "expected_level", "log_prob"])
def test_unnamed_head_does_not_change_reward(kind: str) -> None:
    probs = _probs()
    changed = probs.clone()
    changed[1, 1] = torch.tensor([0.0, 1.0, 0.0], dtype=F64)  # row 1 does not name head 1
    kwargs = _target_mappings()[kind]
    base = map_rewards(kind, probs, _targets(), **kwargs)
    other = map_rewards(kind, changed, _targets(), **kwargs)
    torch.testing.assert_close(base.reward, other.reward)
    torch.testing.assert_close(base.components, other.components)


@pytest.mark.parametrize("kind", ["gaussian", "expected_level", "log_prob"])
def test_unnamed_dimension_changes_nothing(kind: str) -> None:
    # naming only head 0 with the same level gives the same row reward as a one-head problem
    kwargs = _target_mappings()[kind]
    two_heads = map_rewards(kind, _probs(), torch.tensor([[1, -1], [2, -1]]), **kwargs)
    one_head_kwargs = {k: v[:1] for k, v in kwargs.items()}
    one_head = map_rewards(kind, _probs()[:, :1], torch.tensor([[1], [2]]), **one_head_kwargs)
    torch.testing.assert_close(two_heads.reward, one_head.reward)


@pytest.mark.parametrize("kind", ["gaussian", "expected_level", "log_prob"])
def test_gradient_is_finite_and_zero_for_unnamed_head(kind: str) -> None:
    probs = _probs().requires_grad_(True)
    before = probs.detach().clone()
    out = map_rewards(kind, probs, _targets(), **_target_mappings()[kind])
    out.reward.sum().backward()
    assert torch.isfinite(probs.grad).all()
    assert (probs.grad[1, 1] == 0).all()
    assert torch.equal(probs.detach(), before)  # inputs untouched


@pytest.mark.parametrize("kind", ["gaussian", "expected_level", "log_prob"])
def test_empty_row_gets_zero(kind: str) -> None:
    out = map_rewards(kind, _probs(), torch.tensor([[1, 0], [-1, -1]]), **_target_mappings()[kind])
    assert out.reward[1].item() == 0.0
    assert not out.mask[1].any()
    assert (out.components[1] == 0).all()


def test_resolve_targets() -> None:
    targets = torch.tensor([[-1, -1], [2, -1], [-1, 1]])
    # only row 0 has no prefix; rows naming some dimensions keep exactly those
    assert resolve_targets(targets, torch.tensor([1, 0])).tolist() == [[1, 0], [2, -1], [-1, 1]]
    # a default of -1 leaves that dimension unnamed
    assert resolve_targets(targets, torch.tensor([-1, 1])).tolist() == [[-1, 1], [2, -1], [-1, 1]]


def test_resolved_defaults_feed_mapping() -> None:
    targets = resolve_targets(torch.tensor([[-1, -1], [2, -1]]), torch.tensor([1, 0]))
    out = gaussian_mapping(_probs(), targets, MEAN, STD, eps=0.0)
    # row 0 falls back to targets [1, 0]: same as test_gaussian_hand_values -> 1.25
    torch.testing.assert_close(out.reward, torch.tensor([1.25, 2.0], dtype=F64))


def test_dtype_follows_probs() -> None:
    probs = _probs().float()
    out = gaussian_mapping(probs, _targets(), MEAN, STD, eps=0.0)  # float64 stats, float32 probs
    assert out.reward.dtype == torch.float32
    assert out.components.dtype == torch.float32
    torch.testing.assert_close(out.reward, torch.tensor([1.25, 2.0]))
    assert expected_level_mapping(probs, _targets(), NUM_LEVELS).reward.dtype == torch.float32
    assert (
        linear_mapping(probs, torch.tensor([1.0, 1.0], dtype=F64), NUM_LEVELS).reward.dtype == torch.float32
    )


def test_dispatcher_matches_direct_calls() -> None:
    probs, targets = _probs(), _targets()
    weights = torch.tensor([1.0, 0.5], dtype=F64)
    pairs = {
        "gaussian": (
            map_rewards("gaussian", probs, targets, mean=MEAN, std=STD, eps=0.0),
            gaussian_mapping(probs, targets, MEAN, STD, eps=0.0),
        ),
        "expected_level": (
            map_rewards("expected_level", probs, targets, num_levels=NUM_LEVELS),
            expected_level_mapping(probs, targets, NUM_LEVELS),
        ),
        "log_prob": (
            map_rewards("log_prob", probs, targets, eps=0.0),
            log_prob_mapping(probs, targets, eps=0.0),
        ),
        "linear": (
            map_rewards("linear", probs, None, weights=weights, num_levels=NUM_LEVELS),
            linear_mapping(probs, weights, NUM_LEVELS),
        ),
    }
    assert set(pairs) == set(MAPPINGS)
    for via_dispatch, direct in pairs.values():
        for a, b in zip(via_dispatch, direct, strict=True):
            torch.testing.assert_close(a, b)


def test_dispatcher_default_eps() -> None:
    out = map_rewards("log_prob", _probs(), torch.tensor([[-1, 2], [-1, -1]]))
    assert out.reward[0].item() == pytest.approx(math.log(1e-8))  # log_prob's own default


def test_dispatcher_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'softmax'") as info:
        map_rewards("softmax", _probs(), _targets())
    message = str(info.value)
    assert "\n" not in message
    assert all(name in message for name in MAPPINGS)


@pytest.mark.parametrize(
    ("kind", "kwargs", "expected"),
    [
        ("gaussian", {"mean": MEAN}, "the gaussian mapping needs mean and std (missing: std)"),
        ("gaussian", {}, "the gaussian mapping needs mean and std (missing: mean, std)"),
        ("expected_level", {}, "the expected_level mapping needs num_levels"),
        ("linear", {"num_levels": NUM_LEVELS}, "the linear mapping needs weights and num_levels"),
    ],
)
def test_dispatcher_missing_argument(kind: str, kwargs: dict, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        map_rewards(kind, _probs(), _targets(), **kwargs)
    assert str(info.value).startswith(expected)


def test_dispatcher_missing_targets() -> None:
    with pytest.raises(ValueError, match="the log_prob mapping needs targets"):
        map_rewards("log_prob", _probs(), None)


@pytest.mark.parametrize("kind", ["gaussian", "log_prob"])
def test_masked_degenerate_slot_keeps_gradient_finite(kind: str) -> None:
    # row 0 leaves head 1 unnamed; its clamped index 0 points at a zero-std, zero-probability level.
    # With eps = 0 a naive version gives 0 / 0 = NaN in backward (grad 0 divided by sigma or p = 0).
    probs = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]], dtype=F64, requires_grad=True)
    std = torch.tensor([[0.25, 0.25], [0.0, 0.25]], dtype=F64)
    kwargs = {"mean": torch.full((2, 2), 0.5, dtype=F64), "std": std} if kind == "gaussian" else {}
    out = map_rewards(kind, probs, torch.tensor([[0, -1]]), eps=0.0, **kwargs)
    out.reward.sum().backward()
    assert torch.isfinite(probs.grad).all()
    assert (probs.grad[0, 1] == 0).all()
    # gaussian: (0.5 - 0.5) / 0.25 = 0;  log_prob: log 0.5
    assert out.reward.item() == pytest.approx(0.0 if kind == "gaussian" else math.log(0.5))


def test_softmin_aggregation_hand_values() -> None:
    # the z-terms 0.5, 2 | 2 of test_gaussian_hand_values, temperature 1:
    # row 0: -log((e^-0.5 + e^-2) / 2) = -log((0.606531 + 0.135335) / 2) = -log(0.370933) = 0.991734,
    # between the minimum 0.5 and the mean 1.25; row 1 has one named term: softmin = that term = 2
    out = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0, aggregation="softmin")
    assert out.reward.tolist() == pytest.approx([0.991734, 2.0], abs=1e-6)
    assert out.components.tolist() == [[0.5, 2.0], [2.0, 0.0]]
    # temperature 0.5: -0.5 * log((e^-1 + e^-4) / 2) = -0.5 * log(0.193098) = 0.822280
    half = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0, aggregation="softmin:0.5")
    assert half.reward.tolist() == pytest.approx([0.822280, 2.0], abs=1e-6)
    # the limits: a tiny temperature is the minimum, a huge one the mean
    cold = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0, aggregation="softmin:0.001")
    hot = gaussian_mapping(_probs(), _targets(), MEAN, STD, eps=0.0, aggregation="softmin:1000")
    assert cold.reward.tolist() == pytest.approx([0.5 + 0.001 * math.log(2), 2.0], abs=1e-9)
    assert hot.reward.tolist() == pytest.approx([1.25, 2.0], abs=1e-3)
    # a row naming nothing gets 0, as under the other aggregations
    nothing = map_rewards(
        "gaussian",
        _probs(),
        torch.tensor([[-1, -1], [2, -1]]),
        mean=MEAN,
        std=STD,
        eps=0.0,
        aggregation="softmin",
    )
    assert nothing.reward.tolist() == [0.0, 2.0]


def test_softmin_spreads_the_gradient_by_softmax_of_the_negated_terms() -> None:
    # d softmin / d z_k = softmax(-z / tau)_k: for z = (0.5, 2), tau = 1 -> e^-0.5 / (e^-0.5 + e^-2) =
    # 0.817574 on the worse term and 0.182426 on the better one (min would give 1 and 0, mean 0.5 and 0.5)
    probs = _probs().requires_grad_(True)
    out = gaussian_mapping(probs, _targets(), MEAN, STD, eps=0.0, aggregation="softmin")
    out.reward[0].backward()
    # z_k = (p_k[t_k] - mu) / sigma with sigma 0.5 (head 0, level 1) and 0.125 (head 1, level 0)
    assert probs.grad[0, 0, 1].item() == pytest.approx(0.817574 / 0.5, abs=1e-6)
    assert probs.grad[0, 1, 0].item() == pytest.approx(0.182426 / 0.125, abs=1e-5)


@pytest.mark.parametrize("spec", ["max", "softmin:0", "softmin:-1", "softmin:abc", "softmin:inf", "min:2"])
def test_bad_aggregation_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="aggregation"):
        map_rewards("gaussian", _probs(), _targets(), mean=MEAN, std=STD, aggregation=spec)


def test_softmin_gradient_is_finite_with_a_row_naming_nothing() -> None:
    probs = _probs().requires_grad_(True)
    out = gaussian_mapping(probs, torch.tensor([[-1, -1], [2, -1]]), MEAN, STD, aggregation="softmin")
    out.reward.sum().backward()
    assert out.reward[0].item() == 0.0
    assert torch.isfinite(probs.grad).all()
    assert probs.grad[0].abs().sum().item() == 0.0  # the unnamed row gets no gradient
