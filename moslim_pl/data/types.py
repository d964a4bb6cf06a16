"""Typed batches shared by the datamodules, the reward model and the LightningModules."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

IGNORE_LABEL = -100
"""Class index of a missing label: the head ignores that row."""

ALL_HEADS = -1
"""``pair_dims`` value of a pair judged on every head (the mean of their normalized expected levels)."""


class RewardBatch(NamedTuple):
    """A collated batch for the reward model; pairwise rows contribute two sequences each.

    Shapes: N sequences, T tokens (dynamic padding to the longest), K heads, P pairs (may be 0).
    """

    input_ids: Tensor
    """[N, T] long, right-padded with the tokenizer's pad id."""
    attention_mask: Tensor
    """[N, T] long, 1 for real tokens."""
    labels: Tensor
    """[N, K] long, the class index per head or ``IGNORE_LABEL``."""
    pairs: Tensor
    """[P, 2] long, row indices into the N sequences: (chosen, rejected)."""
    pair_dims: Tensor
    """[P] long, the head a pair judges, or ``ALL_HEADS``."""
    pair_margins: Tensor | None = None
    """[P] float, how far the chosen score should exceed the rejected one (TRL's ``margin``); ``None``: 0."""
    prompt_ids: Tensor | None = None
    """[N] long, one id per distinct prompt of the split (``val/rank_acc`` compares responses within a
    prompt); ``None``: unknown."""
