"""Supervised fine-tuning: next-token cross-entropy on the response tokens. Pure torch: no Lightning."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from moslim_pl.data.types import IGNORE_LABEL


def response_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token negative log-likelihood of the labelled tokens, and their count.

    ``logits [N, T, V]`` at position ``t`` predict ``labels [N, T]`` at ``t + 1``; ``IGNORE_LABEL``
    (prompt, padding) is skipped. Returns two scalars: the float32 sum and the long count.
    """
    targets = labels[:, 1:]
    nll = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        targets.flatten(),
        ignore_index=IGNORE_LABEL,
        reduction="sum",
    )
    return nll, (targets != IGNORE_LABEL).sum()
