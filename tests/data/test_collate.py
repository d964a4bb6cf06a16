"""Collation: dynamic right padding, flattened sequences, pair indices."""

from __future__ import annotations

import pytest
import torch

from moslim_pl.data.collate import RewardExample, collate_reward_batch
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL

PAD = 0


def _pointwise(ids: list[int], labels: list[int]) -> RewardExample:
    return RewardExample(input_ids=[ids], labels=[labels], pair_dim=None)


def _pair(chosen: list[int], rejected: list[int], pair_dim: int | None, k: int = 2) -> RewardExample:
    return RewardExample(input_ids=[chosen, rejected], labels=[[IGNORE_LABEL] * k] * 2, pair_dim=pair_dim)


def test_mixed_batch_shapes_padding_and_pairs() -> None:
    batch = collate_reward_batch(
        [
            _pointwise([5, 6, 7], [1, 0]),
            _pair([8, 9], [10, 11, 12, 13], pair_dim=1),
            _pointwise([14], [2, IGNORE_LABEL]),
        ],
        pad_token_id=PAD,
    )
    assert batch.input_ids.shape == (4, 4)
    assert batch.input_ids.tolist() == [
        [5, 6, 7, PAD],
        [8, 9, PAD, PAD],
        [10, 11, 12, 13],
        [14, PAD, PAD, PAD],
    ]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert batch.labels.tolist() == [[1, 0], [IGNORE_LABEL] * 2, [IGNORE_LABEL] * 2, [2, IGNORE_LABEL]]
    assert batch.pairs.tolist() == [[1, 2]]
    assert batch.pair_dims.tolist() == [1]
    assert batch.pair_margins.tolist() == [0.0] and batch.pair_margins.dtype == torch.float32
    assert batch.prompt_ids is None  # the examples carry no prompt_index
    for tensor in batch[:5]:
        assert tensor.dtype == torch.long


def test_margins_and_prompt_ids() -> None:
    examples = [
        RewardExample(
            input_ids=[[1], [2]], labels=[[IGNORE_LABEL]] * 2, pair_dim=0, margin=1.5, prompt_index=0
        ),
        RewardExample(input_ids=[[3]], labels=[[1]], pair_dim=None, prompt_index=0),
        RewardExample(input_ids=[[4], [5]], labels=[[IGNORE_LABEL]] * 2, pair_dim=0, prompt_index=1),
    ]
    batch = collate_reward_batch(examples, pad_token_id=PAD)
    assert batch.pairs.tolist() == [[0, 1], [3, 4]]
    assert batch.pair_margins.tolist() == [1.5, 0.0]  # a pair without a margin has 0
    assert batch.prompt_ids.tolist() == [0, 0, 0, 1, 1]  # one id per sequence


def test_pairs_index_the_flattened_sequences() -> None:
    batch = collate_reward_batch([_pair([1], [2], 0), _pair([3], [4, 4], None)], pad_token_id=99)
    assert batch.pairs.tolist() == [[0, 1], [2, 3]]
    assert batch.pair_dims.tolist() == [0, ALL_HEADS]
    assert batch.input_ids[batch.pairs[:, 0], 0].tolist() == [1, 3]  # chosen rows
    assert batch.input_ids.tolist()[0] == [1, 99]


def test_pointwise_only_batch_has_empty_pairs() -> None:
    batch = collate_reward_batch([_pointwise([1, 2], [0]), _pointwise([3], [1])], pad_token_id=PAD)
    assert batch.pairs.shape == (0, 2)
    assert batch.pair_dims.shape == (0,)
    assert batch.labels.shape == (2, 1)


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ([], "empty batch"),
        ([_pointwise([1], [0]), _pointwise([2], [0, 1])], "number of heads"),
        ([RewardExample(input_ids=[[1], [2], [3]], labels=[[0]] * 3, pair_dim=None)], "1 or 2 sequences"),
        ([_pointwise([], [0])], "empty sequence"),
    ],
)
def test_bad_examples_raise(examples: list[RewardExample], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        collate_reward_batch(examples, pad_token_id=PAD)
