"""Bradley-Terry loss of preference pairs on the classification heads' expected levels (pure torch).

A pair judged on dimension ``d`` trains head ``d``: its score of a response is the head's expected level
``E_d = sum_l l * p_d[l]`` (in class units, ``0..L_d - 1``) and the loss is
``-log sigmoid(E_d(chosen) - E_d(rejected) - margin)``. The expected level is the score because it is
what the reward mappings and the policy's requested levels read from a head (docs/concepts.md): a pair
then moves probability mass towards the higher levels for the chosen response, so the same head serves
pointwise labels (cross-entropy), pairs and the reward. Being bounded by ``L_d - 1``, it also keeps a
pair from driving the logits without limit. See docs/user_guide.md ("Pairs train the heads").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moslim_pl.data.types import ALL_HEADS


def expand_pairs(pairs: Tensor, pair_dims: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """One ``(pair, head)`` entry per head that judges a pair: ``ALL_HEADS`` pairs judge every head.

    Args:
        pairs: [P, 2] long row indices (chosen, rejected).
        pair_dims: [P] long head index or ``ALL_HEADS``.
        num_heads: K.

    Returns:
        ``(pair_index [Q], head [Q], _)`` long, with Q = pairs on one head + K * pairs on all heads, in
        pair order; the third tensor is ``pairs[pair_index]`` [Q, 2].
    """
    every = pair_dims == ALL_HEADS
    repeats = torch.where(every, num_heads, 1)
    pair_index = torch.repeat_interleave(torch.arange(len(pair_dims), device=pairs.device), repeats)
    offsets = torch.arange(len(pair_index), device=pairs.device) - torch.repeat_interleave(
        torch.cumsum(repeats, 0) - repeats, repeats
    )
    head = torch.where(every[pair_index], offsets, pair_dims[pair_index])
    return pair_index, head, pairs[pair_index]


def bradley_terry_loss(
    scores: Tensor, pairs: Tensor, pair_dims: Tensor, margins: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Bradley-Terry loss of every head that judges pairs, on that head's scores.

    Args:
        scores: [N, K] score per sequence and head (the expected level, see the module docstring).
        pairs: [P, 2] long row indices into the N sequences (chosen, rejected).
        pair_dims: [P] long, the head judging a pair or ``ALL_HEADS`` (every head judges it).
        margins: [P] float, the margin by which the chosen score should exceed the rejected one
            (TRL's ``margin`` column); ``None``: 0.

    Returns:
        ``(loss, per_head, has_pairs)``: ``per_head`` [K] is the mean of
        ``-log sigmoid(s_chosen - s_rejected - margin)`` over the pairs judging each head (0 where none),
        ``has_pairs`` [K] bool, and ``loss`` [] the mean over the heads with pairs, so that a head with
        few pairs is not drowned by heads with many (as ``multi_head_cross_entropy``). Without pairs the
        loss is 0 and still connected to ``scores``' graph (every DDP rank runs the same backward).
    """
    num_heads = scores.shape[1]
    per_head = scores.new_zeros(num_heads, dtype=torch.float32)
    counts = torch.zeros(num_heads, dtype=torch.long, device=scores.device)
    if pairs.numel():
        pair_index, head, rows = expand_pairs(pairs, pair_dims, num_heads)
        diff = scores[rows[:, 0], head].float() - scores[rows[:, 1], head].float()
        if margins is not None:
            diff = diff - margins.to(diff)[pair_index]
        terms = -F.logsigmoid(diff)
        per_head = per_head.index_add(0, head, terms)
        counts = counts.index_add(0, head, torch.ones_like(head))
        per_head = per_head / counts.clamp(min=1)
    has_pairs = counts > 0
    loss = per_head.sum() / has_pairs.sum().clamp(min=1)
    if not bool(has_pairs.any()):
        loss = loss + 0.0 * scores.float().sum().nan_to_num()
    return loss, per_head, has_pairs


def pair_accuracy(scores: Tensor, pairs: Tensor, pair_dims: Tensor) -> tuple[Tensor, Tensor]:
    """Whether each head that judges a pair orders it correctly (a tie counts half).

    Args:
        scores: [N, K]; pairs: [P, 2]; pair_dims: [P] (as :func:`bradley_terry_loss`).

    Returns:
        ``(correct [Q] float in {0, 0.5, 1}, head [Q] long)``, one entry per (pair, judging head).
    """
    _, head, rows = expand_pairs(pairs, pair_dims, scores.shape[1])
    chosen, rejected = scores[rows[:, 0], head], scores[rows[:, 1], head]
    return (chosen > rejected).float() + 0.5 * (chosen == rejected).float(), head


def within_prompt_rank_counts(scores: Tensor, labels: Tensor, prompt_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per head, how many pairs of responses to one prompt with different labels the scores order right.

    Over every pair ``(i, j)`` of sequences with ``prompt_ids[i] == prompt_ids[j]`` and two different
    labels on head k (missing labels excluded), a pair counts 1 when the scores order it as the labels
    do, 0.5 on a tied score, else 0. This is what a reward model does for RL: rank samples of one prompt.

    Args:
        scores: [M, K] score per sequence and head (the expected level).
        labels: [M, K] long class index or ``IGNORE_LABEL`` (any negative value is missing).
        prompt_ids: [M] long, equal for responses to the same prompt.

    Returns:
        ``(correct [K] float, count [K] long)``: ``correct / count`` is the within-prompt ranking accuracy.
    """
    num_heads = scores.shape[1]
    correct = torch.zeros(num_heads, dtype=torch.float64, device=scores.device)
    count = torch.zeros(num_heads, dtype=torch.long, device=scores.device)
    order = torch.argsort(prompt_ids, stable=True)
    _, sizes = torch.unique_consecutive(prompt_ids[order], return_counts=True)
    for group in torch.split(order, sizes.tolist()):
        if len(group) < 2:
            continue
        s, y = scores[group].double(), labels[group]  # [G, K]
        label_diff = y.unsqueeze(1) - y.unsqueeze(0)  # [G, G, K]: i minus j
        valid = (y.unsqueeze(1) >= 0) & (y.unsqueeze(0) >= 0) & (label_diff > 0)  # each pair once: i > j
        score_diff = s.unsqueeze(1) - s.unsqueeze(0)
        hit = (score_diff > 0).double() + 0.5 * (score_diff == 0).double()
        correct += (hit * valid).sum((0, 1))
        count += valid.sum((0, 1))
    return correct, count
