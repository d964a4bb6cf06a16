"""Per-head cross-entropy of the multi-head classification reward model (pure torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moslim_pl.data.types import IGNORE_LABEL
from moslim_pl.rewards.mapping import normalized_expected_level


def multi_head_cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy of every head, ignoring missing labels.

    Args:
        logits: [N, K, L] (padded levels hold a very negative value, so they get no probability).
        labels: [N, K] long class indices, ``IGNORE_LABEL`` where a row does not label a head.

    Returns:
        ``(loss, per_head, has_labels)``: ``loss`` [] is the mean over the heads that have at least one
        label in the batch (so a head with few labels is not drowned by heads with many), ``per_head`` [K]
        (0 for heads without labels) and ``has_labels`` [K] bool.
    """
    n, k, levels = logits.shape
    flat = F.cross_entropy(
        logits.reshape(n * k, levels).float(),
        labels.reshape(n * k),
        ignore_index=IGNORE_LABEL,
        reduction="none",
    ).reshape(n, k)
    valid = labels != IGNORE_LABEL
    counts = valid.sum(0)
    per_head = flat.sum(0) / counts.clamp(min=1)
    has_labels = counts > 0
    loss = per_head.sum() / has_labels.sum().clamp(min=1)
    if not bool(has_labels.any()):
        # keep the graph connected so every rank runs the same backward under DDP
        loss = loss + 0.0 * logits.float().sum().nan_to_num()
    return loss, per_head, has_labels


def pair_scores(probs: Tensor, num_levels: Tensor, pair_dims: Tensor, rows: Tensor) -> Tensor:
    """Scores used to rank the two sides of preference pairs.

    Args:
        probs: [N, K, L] per-head probabilities (0 on padded levels).
        num_levels: [K] long.
        pair_dims: [P] long head index per pair, or -1 for the mean over heads.
        rows: [P] long row index into the N sequences.

    Returns:
        [P] the normalized expected level (in [0, 1]) of the judged head, or its mean over heads.
    """
    picked = normalized_expected_level(probs, num_levels)[rows]  # [P, K]
    head = pair_dims.clamp(min=0).unsqueeze(-1)
    return torch.where(pair_dims >= 0, picked.gather(1, head).squeeze(-1), picked.mean(-1))
