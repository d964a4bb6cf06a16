"""Running statistics of the predicted probability of every (head, level) (`docs/concepts.md`, section 3).

The gaussian reward mapping standardizes ``p_k[t]`` by a mean and std per (head, level). A callback keeps
them while the RM trains in two steps, with an all-reduce across ranks between them:

1. :func:`probability_sums` turns a batch ``probs [N, K, L]`` into additive :class:`StatSums`
   (sums and count, so ranks and batches combine exactly with :func:`add_sums` or an all-reduce);
2. :meth:`StatSums.moments` gives the batch mean and std, which :func:`ema_update` blends into the
   running ones.

Sums are float64: squared probabilities summed over many rows lose too much precision in float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class StatSums(NamedTuple):
    """Additive sufficient statistics of probabilities.

    Attributes:
        total: ``[K, L]`` float64, sum over rows of ``p``.
        total_sq: ``[K, L]`` float64, sum over rows of ``p**2``.
        count: ``[]`` float64, number of rows.
    """

    total: Tensor
    total_sq: Tensor
    count: Tensor

    def moments(self) -> tuple[Tensor, Tensor]:
        """Mean and population std, both ``[K, L]`` float64; ``count`` must be positive.

        The variance ``E[p^2] - E[p]^2`` is clamped at 0 because cancellation can make it slightly
        negative for a (head, level) whose probability barely varies, and its sqrt would be NaN.
        """
        mean = self.total / self.count
        variance = (self.total_sq / self.count - mean.square()).clamp(min=0)
        return mean, variance.sqrt()


def add_sums(a: StatSums, b: StatSums) -> StatSums:
    """Combine the sums of two disjoint sets of rows (what an all-reduce does across ranks).

    A function rather than ``StatSums.__add__``, which would break tuple concatenation.
    """
    return StatSums(a.total + b.total, a.total_sq + b.total_sq, a.count + b.count)


def probability_sums(probs: Tensor) -> StatSums:
    """Sum ``probs [N, K, L]`` over rows into float64, detached, :class:`StatSums` of shape ``[K, L]``."""
    if probs.dim() != 3:
        raise ValueError(f"probs must be [N, K, L], got shape {tuple(probs.shape)}")
    p = probs.detach().to(torch.float64)
    count = torch.tensor(float(p.shape[0]), dtype=torch.float64, device=p.device)
    return StatSums(p.sum(dim=0), p.square().sum(dim=0), count)


def ema_update(
    mean: Tensor, std: Tensor, batch_mean: Tensor, batch_std: Tensor, momentum: float
) -> tuple[Tensor, Tensor]:
    """Blend batch statistics into running ones by an exponentially weighted mixture.

    ``new_mean = (1-m)*mean + m*batch_mean`` and
    ``new_var = (1-m)*std**2 + m*batch_std**2 + m*(1-m)*(batch_mean-mean)**2``, the variance of the
    mixture of the two distributions: with ``m = n_batch / (n_seen + n_batch)`` this is the exact pooled
    variance, and the last term keeps the std from shrinking while the mean is still moving.

    Args:
        mean, std: ``[K, L]`` running statistics.
        batch_mean, batch_std: ``[K, L]`` statistics of the new batch (moved to ``mean``'s dtype/device).
        momentum: weight ``m`` of the batch, in ``(0, 1]``; 1 replaces the running statistics.

    Returns:
        ``(new_mean, new_std)``, both ``[K, L]`` in ``mean``'s dtype.
    """
    if not 0.0 < momentum <= 1.0:  # also rejects NaN
        raise ValueError(f"momentum must be in (0, 1], got {momentum}")
    batch_mean = batch_mean.to(device=mean.device, dtype=mean.dtype)
    batch_std = batch_std.to(device=mean.device, dtype=mean.dtype)
    new_mean = (1 - momentum) * mean + momentum * batch_mean
    new_var = (
        (1 - momentum) * std.square()
        + momentum * batch_std.square()
        + momentum * (1 - momentum) * (batch_mean - mean).square()
    )
    return new_mean, new_var.sqrt()
