import math

import pytest
import torch

from moslim_pl.data.types import IGNORE_LABEL
from moslim_pl.losses import multi_head_cross_entropy, pair_scores

NEG = torch.finfo(torch.float32).min


def test_cross_entropy_per_head_by_hand():
    # head 0 has 3 levels, head 1 has 2 (its third level is padding)
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [0.0, math.log(3.0), NEG]],
            [[math.log(2.0), 0.0, 0.0], [0.0, 0.0, NEG]],
        ]
    )
    labels = torch.tensor([[1, 1], [0, IGNORE_LABEL]])
    loss, per_head, has_labels = multi_head_cross_entropy(logits, labels)
    # head 0: row 0 uniform over 3 -> log 3; row 1 p(0) = 2/4 -> log 2; mean (log 3 + log 2) / 2
    # head 1: only row 0, p(1) = 3/4 -> -log(3/4)
    expected = torch.tensor([(math.log(3) + math.log(2)) / 2, -math.log(0.75)])
    assert torch.allclose(per_head, expected, atol=1e-6)
    assert has_labels.tolist() == [True, True]
    assert loss.item() == pytest.approx(expected.mean().item(), abs=1e-6)


def test_head_without_labels_is_left_out_of_the_mean():
    logits = torch.zeros(2, 2, 2, requires_grad=True)
    labels = torch.tensor([[0, IGNORE_LABEL], [1, IGNORE_LABEL]])
    loss, per_head, has_labels = multi_head_cross_entropy(logits, labels)
    assert has_labels.tolist() == [True, False]
    assert per_head[1].item() == 0.0
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # not halved by the empty head


def test_no_labels_at_all_gives_zero_loss_with_a_graph():
    logits = torch.zeros(2, 2, 2, requires_grad=True)
    loss, _, _ = multi_head_cross_entropy(logits, torch.full((2, 2), IGNORE_LABEL))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_pair_scores_by_hand():
    # 2 heads with 3 and 2 levels; normalized expected level = E[class] / (levels - 1)
    probs = torch.tensor(
        [
            [[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]],  # head0 E=2 -> 1.0; head1 E=0.5 -> 0.5
            [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]],  # head0 E=0.5 -> 0.25; head1 E=1 -> 1.0
        ]
    )
    num_levels = torch.tensor([3, 2])
    rows = torch.tensor([0, 1, 0])
    dims = torch.tensor([0, 1, -1])
    assert torch.allclose(pair_scores(probs, num_levels, dims, rows), torch.tensor([1.0, 1.0, 0.75]))
