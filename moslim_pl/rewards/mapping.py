"""Map the RM's per-head class probabilities to one scalar reward per row (`docs/concepts.md`, section 4).

Shapes used throughout: ``N`` rows, ``K`` heads (preference dimensions), ``L`` the largest number of
levels over heads. ``probs: [N, K, L]`` holds each head's softmax, padded with exact zeros at the levels a
head does not have; ``num_levels: [K]`` long gives each head's real number of levels. ``targets: [N, K]``
long holds the requested level per dimension, ``-1`` where the prompt does not name that dimension.

Every mapping returns a :class:`MappedReward` so callers can log per-dimension terms as well as the
reward. All functions are vectorized over rows, never modify their inputs in place and compute in the
dtype and on the device of ``probs``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

MAPPINGS: tuple[str, ...] = ("gaussian", "expected_level", "log_prob", "linear")
AGGREGATIONS: tuple[str, ...] = ("mean", "min", "softmin")
"""How the named dimensions' terms become one reward: ``mean`` (the paper's), ``min`` (the worst named
dimension decides, so a hit on one cannot buy off a miss on another) or ``softmin`` (a smooth minimum,
written ``softmin`` for temperature 1 or ``softmin:<temperature>``; ``docs/concepts.md``)."""


def parse_aggregation(aggregation: str) -> tuple[str, float]:
    """``(kind, temperature)`` of an aggregation spec: ``"mean"``, ``"min"``, ``"softmin"`` (temperature 1)
    or ``"softmin:<temperature>"`` with a positive temperature; the temperature is 0 for the others.

    Raises:
        ValueError: an unknown kind, or a temperature that is not a positive number.
    """
    kind, _, value = str(aggregation).partition(":")
    if kind not in AGGREGATIONS or (value and kind != "softmin"):
        raise ValueError(
            f"unknown aggregation {aggregation!r}; expected one of mean, min, softmin or softmin:<temperature>"
        )
    if kind != "softmin":
        return kind, 0.0
    try:
        temperature = float(value) if value else 1.0
    except ValueError:
        temperature = float("nan")
    if not temperature > 0 or temperature == float("inf"):
        raise ValueError(f"aggregation {aggregation!r}: the softmin temperature must be a positive number")
    return kind, temperature


class MappedReward(NamedTuple):
    """Result of a reward mapping.

    Attributes:
        reward: ``[N]`` float, the scalar reward of each row.
        components: ``[N, K]`` float, the per-dimension term before averaging or summing; 0 where masked.
        mask: ``[N, K]`` bool, True where the dimension contributes to the reward.
    """

    reward: Tensor
    components: Tensor
    mask: Tensor


def resolve_targets(targets: Tensor, default_targets: Tensor) -> Tensor:
    """Give rows whose prompt carries no prefix the configured default targets.

    Args:
        targets: ``[N, K]`` long, requested level per dimension, ``-1`` = not named.
        default_targets: ``[K]`` long, default level per dimension, ``-1`` = not among the defaults.

    Returns:
        ``[N, K]`` long: rows where every entry is ``-1`` replaced by ``default_targets``, other rows
        unchanged (a prompt naming some dimensions keeps exactly those).
    """
    no_prefix = (targets < 0).all(dim=-1, keepdim=True)  # [N, 1]
    defaults = default_targets.to(device=targets.device, dtype=targets.dtype).expand_as(targets)
    return torch.where(no_prefix, defaults, targets)


def _target_mask_and_index(targets: Tensor) -> tuple[Tensor, Tensor]:
    """Split ``targets [N, K]`` into the contribution mask and a gather-safe index (both ``[N, K]``)."""
    mask = targets >= 0
    # -1 would index from the end (or fail in gather); any valid level works since the result is masked.
    return mask, targets.clamp(min=0)


def _masked_mean(components: Tensor, mask: Tensor, aggregation: str = "mean") -> MappedReward:
    """Zero the masked ``components [N, K]`` and aggregate the unmasked ones per row (0 for an empty row).

    ``mean``: their average. ``min``: the smallest. ``softmin`` with temperature ``tau``:
    ``-tau * log((1/|S|) * sum_{k in S} exp(-c_k / tau))``, which lies between the minimum (``tau -> 0``)
    and the mean (``tau -> inf``), equals ``c`` when every term is ``c``, and spreads its gradient over the
    terms by ``softmax(-c / tau)``: the worst named dimension gets the most, the others still some.
    """
    kind, temperature = parse_aggregation(aggregation)
    # torch.where (not multiplication) so that a non-finite term at a masked position cannot leak as NaN.
    components = torch.where(mask, components, torch.zeros_like(components))
    named = mask.any(dim=-1)
    count = mask.sum(dim=-1).clamp(min=1).to(components.dtype)
    if kind == "min":
        worst = torch.where(mask, components, torch.full_like(components, torch.inf)).amin(dim=-1)
        return MappedReward(torch.where(named, worst, torch.zeros_like(worst)), components, mask)
    if kind == "softmin":
        scaled = torch.where(mask, -components / temperature, torch.full_like(components, -torch.inf))
        # A row naming nothing would take logsumexp of -inf only: a NaN gradient even where it is discarded.
        scaled = torch.where(named.unsqueeze(-1), scaled, torch.zeros_like(scaled))
        soft = -temperature * (torch.logsumexp(scaled, dim=-1) - count.log())
        return MappedReward(torch.where(named, soft, torch.zeros_like(soft)), components, mask)
    return MappedReward(components.sum(dim=-1) / count, components, mask)


def expected_level(probs: Tensor) -> Tensor:
    """``E_k[class] = sum_l l * probs[n, k, l]`` as ``[N, K]``; zero padding makes padded levels vanish."""
    levels = torch.arange(probs.shape[-1], device=probs.device, dtype=probs.dtype)
    return (probs * levels).sum(dim=-1)


def _level_span(num_levels: Tensor, probs: Tensor) -> Tensor:
    """``num_levels - 1`` as ``[K]`` in probs' dtype; clamped so a one-level head does not divide by 0."""
    return (num_levels.to(device=probs.device) - 1).clamp(min=1).to(probs.dtype)


def normalized_expected_level(probs: Tensor, num_levels: Tensor) -> Tensor:
    """``E_k[class] / (num_levels_k - 1)`` as ``[N, K]``, in [0, 1] whatever a head's number of levels."""
    return expected_level(probs) / _level_span(num_levels, probs)


def gaussian_mapping(
    probs: Tensor,
    targets: Tensor,
    mean: Tensor,
    std: Tensor,
    eps: float = 1e-6,
    sigma_floor: float = 0.0,
    z_clip: float | None = None,
    aggregation: str = "mean",
) -> MappedReward:
    """Standardized probability of the requested level, averaged over the named dimensions.

    ``r = (1/|S|) * sum_{k in S} (p_k[t_k] - mu_k[t_k]) / (sigma_k[t_k] + eps)`` with
    ``S = {k : targets[n, k] >= 0}``; a row with empty ``S`` gets reward 0.

    Two guards against skewed real labels (a rare level, e.g. HelpSteer's verbosity 4, has a probability
    that barely varies over the RM's training data: a tiny sigma blows its z-term up until that one
    dimension decides every reward; ``docs/concepts.md``): ``sigma_floor`` replaces ``sigma`` by
    ``max(sigma, sigma_floor)``, and ``z_clip`` clamps each z-term to ``[-z_clip, z_clip]``. The defaults
    (0, ``None``) leave the paper's formula as it is.

    ``aggregation="min"`` replaces the average by the minimum over ``S``: the reward is the worst named
    dimension's z-term, so answering one request well cannot make up for ignoring another;
    ``"softmin[:tau]"`` by a smooth minimum (:func:`_masked_mean`).

    Args:
        probs: ``[N, K, L]`` per-head probabilities, zero-padded.
        targets: ``[N, K]`` long, requested level, ``-1`` = not named.
        mean: ``[K, L]`` running mean of each (head, level) probability.
        std: ``[K, L]`` running std of each (head, level) probability.
        eps: added to the std so a level that never varied does not divide by 0.
        sigma_floor: lower bound of each std (before ``eps`` is added); 0 = none.
        z_clip: bound on the absolute value of each z-term; ``None`` = none.
        aggregation: ``mean`` (the paper's), ``min`` or ``softmin[:tau]`` over the named dimensions
            (:func:`parse_aggregation`).

    Returns:
        :class:`MappedReward` with ``reward [N]``, ``components [N, K]``, ``mask [N, K]``.
    """
    mask, index = _target_mask_and_index(targets)
    p_t = probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)  # [N, K]
    heads = torch.arange(probs.shape[1], device=probs.device)
    # Advanced indexing with heads [K] and index [N, K] broadcasts to [N, K]: stats of each row's target.
    mu_t = mean.to(device=probs.device, dtype=probs.dtype)[heads, index]
    sigma_t = std.to(device=probs.device, dtype=probs.dtype)[heads, index]
    if sigma_floor > 0:
        sigma_t = sigma_t.clamp(min=sigma_floor)
    sigma_t = sigma_t + eps
    # A masked slot may point at a zero-std (e.g. padded) level; a safe divisor keeps its gradient finite.
    sigma_t = torch.where(mask, sigma_t, torch.ones_like(sigma_t))
    z = (p_t - mu_t) / sigma_t
    if z_clip is not None:
        z = z.clamp(-z_clip, z_clip)
    return _masked_mean(z, mask, aggregation)


def expected_level_mapping(
    probs: Tensor, targets: Tensor, num_levels: Tensor, aggregation: str = "mean"
) -> MappedReward:
    """Negative normalized distance between the expected level and the requested one.

    ``component_k = -|E_k[class] - t_k| / (num_levels_k - 1)`` lies in ``[-1, 0]`` (0 is a perfect hit),
    so heads with different numbers of levels weigh the same; averaged over the named dimensions (or
    their minimum or smooth minimum, ``aggregation="min"`` or ``"softmin[:tau]"``).

    Args:
        probs: ``[N, K, L]`` per-head probabilities, zero-padded.
        targets: ``[N, K]`` long, requested level, ``-1`` = not named.
        num_levels: ``[K]`` long, each head's number of levels.

    Returns:
        :class:`MappedReward` with ``reward [N]``, ``components [N, K]``, ``mask [N, K]``.
    """
    mask, index = _target_mask_and_index(targets)
    distance = (expected_level(probs) - index.to(probs.dtype)).abs()
    return _masked_mean(-distance / _level_span(num_levels, probs), mask, aggregation)


def log_prob_mapping(
    probs: Tensor, targets: Tensor, eps: float = 1e-8, aggregation: str = "mean"
) -> MappedReward:
    """Log-probability of the requested level, averaged over the named dimensions (or their (smooth) minimum,
    ``aggregation="min"`` or ``"softmin[:tau]"``).

    Args:
        probs: ``[N, K, L]`` per-head probabilities, zero-padded.
        targets: ``[N, K]`` long, requested level, ``-1`` = not named.
        eps: added inside the log so a zero probability gives a finite (very negative) term.

    Returns:
        :class:`MappedReward` with ``reward [N]``, ``components [N, K]``, ``mask [N, K]``.
    """
    mask, index = _target_mask_and_index(targets)
    p_t = probs.gather(-1, index.unsqueeze(-1)).squeeze(-1) + eps
    # log'(0) is infinite even behind a mask (0 * inf = NaN in backward), so masked slots read p = 1.
    p_t = torch.where(mask, p_t, torch.ones_like(p_t))
    return _masked_mean(torch.log(p_t), mask, aggregation)


def linear_mapping(probs: Tensor, weights: Tensor, num_levels: Tensor) -> MappedReward:
    """MORLHF baseline: a fixed weighted sum of normalized expected levels; prompts' targets are ignored.

    ``component_k = w_k * E_k[class] / (num_levels_k - 1)``, ``reward = sum_k component_k``.

    Args:
        probs: ``[N, K, L]`` per-head probabilities, zero-padded.
        weights: ``[K]`` float preference weights.
        num_levels: ``[K]`` long, each head's number of levels.

    Returns:
        :class:`MappedReward` with ``reward [N]``, ``components [N, K]`` and ``mask [N, K]`` equal to
        ``weights != 0`` on every row.
    """
    weights = weights.to(device=probs.device, dtype=probs.dtype)
    components = weights * normalized_expected_level(probs, num_levels)
    mask = (weights != 0).expand(probs.shape[0], -1)
    return MappedReward(components.sum(dim=-1), components, mask)


def _require(kind: str, **arguments: object) -> None:
    """Raise a one-line ValueError naming the arguments that ``kind`` needs but did not get."""
    missing = [name for name, value in arguments.items() if value is None]
    if missing:
        raise ValueError(
            f"the {kind} mapping needs {' and '.join(arguments)} (missing: {', '.join(missing)})"
        )


def map_rewards(
    kind: str,
    probs: Tensor,
    targets: Tensor | None,
    *,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    num_levels: Tensor | None = None,
    weights: Tensor | None = None,
    eps: float | None = None,
    sigma_floor: float = 0.0,
    z_clip: float | None = None,
    aggregation: str = "mean",
) -> MappedReward:
    """Dispatch to the mapping named ``kind`` (one of :data:`MAPPINGS`).

    Args:
        kind: mapping name.
        probs: ``[N, K, L]`` per-head probabilities, zero-padded.
        targets: ``[N, K]`` long (``-1`` = not named); ignored (may be None) by ``linear``. Apply
            :func:`resolve_targets` first for prompts without a prefix.
        mean, std: ``[K, L]`` running statistics, needed by ``gaussian``.
        num_levels: ``[K]`` long, needed by ``expected_level`` and ``linear``.
        weights: ``[K]`` float, needed by ``linear``.
        eps: overrides the mapping's default eps (``gaussian``, ``log_prob``); None keeps the default;
            ignored by mappings without an eps.
        sigma_floor, z_clip: the ``gaussian`` mapping's guards (:func:`gaussian_mapping`); ignored by
            the other mappings.
        aggregation: how the named dimensions' terms combine, ``mean``, ``min`` or ``softmin[:tau]``
            (:func:`parse_aggregation`); ignored by ``linear`` (a fixed weighted sum).

    Returns:
        :class:`MappedReward` with ``reward [N]``, ``components [N, K]``, ``mask [N, K]``.

    Raises:
        ValueError: unknown ``kind`` or ``aggregation``, or a missing argument that ``kind`` needs.
    """
    if kind not in MAPPINGS:
        raise ValueError(f"unknown reward mapping {kind!r}; expected one of {', '.join(MAPPINGS)}")
    parse_aggregation(aggregation)
    if kind != "linear":
        _require(kind, targets=targets)
    eps_kwargs = {} if eps is None else {"eps": eps}
    if kind == "gaussian":
        _require(kind, mean=mean, std=std)
        return gaussian_mapping(
            probs,
            targets,
            mean,
            std,
            sigma_floor=sigma_floor,
            z_clip=z_clip,
            aggregation=aggregation,
            **eps_kwargs,
        )
    if kind == "expected_level":
        _require(kind, num_levels=num_levels)
        return expected_level_mapping(probs, targets, num_levels, aggregation)
    if kind == "log_prob":
        return log_prob_mapping(probs, targets, aggregation=aggregation, **eps_kwargs)
    _require(kind, weights=weights, num_levels=num_levels)
    return linear_mapping(probs, weights, num_levels)
