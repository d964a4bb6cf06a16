"""Bradley-Terry loss on the heads' expected levels and within-prompt ranking, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.losses import bradley_terry_loss, pair_accuracy
from moslim_pl.losses.pairwise import expand_pairs, within_prompt_rank_counts

# [N=3, K=2] scores (expected levels)
SCORES = torch.tensor([[2.0, 0.5], [1.0, 1.0], [0.0, 3.0]])
PAIRS = torch.tensor([[0, 1], [2, 1]])
DIMS = torch.tensor([0, ALL_HEADS])


def softplus(x: float) -> float:  # -log sigmoid(-x) = log(1 + e^x)
    return math.log1p(math.exp(x))


def test_all_heads_pairs_judge_every_head() -> None:
    pair_index, head, rows = expand_pairs(PAIRS, DIMS, num_heads=2)
    assert pair_index.tolist() == [0, 1, 1]
    assert head.tolist() == [0, 0, 1]
    assert rows.tolist() == [[0, 1], [2, 1], [2, 1]]


def test_bradley_terry_by_hand() -> None:
    loss, per_head, has_pairs = bradley_terry_loss(SCORES, PAIRS, DIMS)
    # head 0: pair 0 diff 2-1 = 1, pair 1 diff 0-1 = -1; head 1: pair 1 diff 3-1 = 2
    head0 = (softplus(-1.0) + softplus(1.0)) / 2
    head1 = softplus(-2.0)
    assert per_head.tolist() == pytest.approx([head0, head1], abs=1e-6)
    assert has_pairs.tolist() == [True, True]
    assert loss.item() == pytest.approx((head0 + head1) / 2, abs=1e-6)


def test_margin_is_subtracted_from_the_difference() -> None:
    _, per_head, _ = bradley_terry_loss(SCORES, PAIRS, DIMS, torch.tensor([0.5, 1.0]))
    # head 0: diffs 1 - 0.5 and -1 - 1; head 1: 2 - 1
    assert per_head.tolist() == pytest.approx(
        [(softplus(-0.5) + softplus(2.0)) / 2, softplus(-1.0)], abs=1e-6
    )


def test_head_without_pairs_is_left_out_and_gradient_ranks() -> None:
    scores = SCORES.clone().requires_grad_(True)
    loss, per_head, has_pairs = bradley_terry_loss(scores, PAIRS[:1], DIMS[:1])
    assert has_pairs.tolist() == [True, False] and per_head[1].item() == 0.0
    assert loss.item() == pytest.approx(softplus(-1.0), abs=1e-6)  # not halved by the empty head
    loss.backward()
    # descending the loss raises the chosen score and lowers the rejected one
    assert scores.grad[0, 0] < 0 < scores.grad[1, 0]


def test_no_pairs_gives_zero_loss_with_a_graph() -> None:
    scores = SCORES.clone().requires_grad_(True)
    loss, _, has_pairs = bradley_terry_loss(
        scores, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0).long()
    )
    loss.backward()
    assert loss.item() == 0.0 and not has_pairs.any() and scores.grad is not None


def test_pair_accuracy_counts_ties_half() -> None:
    scores = torch.tensor([[1.0, 2.0], [1.0, 0.0]])
    correct, head = pair_accuracy(scores, torch.tensor([[0, 1]]), torch.tensor([ALL_HEADS]))
    assert correct.tolist() == [0.5, 1.0] and head.tolist() == [0, 1]


def test_within_prompt_rank_counts_by_hand() -> None:
    x = IGNORE_LABEL
    prompt_ids = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([[2, 0], [1, x], [1, 1], [0, 2], [3, 2], [4, 0]])
    scores = torch.tensor([[1.0, 0.3], [0.5, 0.0], [2.0, 0.3], [0.1, 1.0], [0.0, 2.0], [9.0, 0.0]])
    correct, count = within_prompt_rank_counts(scores, labels, prompt_ids)
    # head 0: prompt 0 (0,1) right, (0,2) wrong, (1,2) same label; prompt 1 (3,4) wrong; prompt 2 alone
    # head 1: prompt 0 only (0,2) (row 1 unlabelled), tied scores -> 0.5; prompt 1 same labels
    assert correct.tolist() == [1.0, 0.5]
    assert count.tolist() == [3, 1]


def test_rank_counts_do_not_depend_on_row_order() -> None:
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.rand(20, 3, generator=g), torch.randint(0, 4, (20, 3), generator=g)
    prompt_ids = torch.randint(0, 5, (20,), generator=g)
    perm = torch.randperm(20, generator=g)
    a = within_prompt_rank_counts(scores, labels, prompt_ids)
    b = within_prompt_rank_counts(scores[perm], labels[perm], prompt_ids[perm])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
