"""Collation of encoded preference examples into a ``RewardBatch`` with dynamic padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict

import torch

from moslim_pl.data.types import ALL_HEADS, RewardBatch


class RewardExample(TypedDict):
    """One encoded row: a pointwise row has one sequence, a pairwise row two (chosen, rejected)."""

    input_ids: list[list[int]]
    """[S][L_s] token ids per sequence (S = 1 or 2)."""
    labels: list[list[int]]
    """[S][K] class index per head, or ``IGNORE_LABEL``."""
    pair_dim: int | None
    """Head judging the pair, ``ALL_HEADS``; ``None`` for a pointwise row."""
    margin: NotRequired[float]
    """Margin of a pair (0 when absent)."""
    prompt_index: NotRequired[int]
    """Id of the row's prompt within its split (absent: the batch carries no ``prompt_ids``)."""


def collate_reward_batch(examples: Sequence[RewardExample], pad_token_id: int) -> RewardBatch:
    """Flatten the examples' sequences and right-pad them to the longest one in the batch.

    Returns a ``RewardBatch`` with N = total sequences, T = longest sequence, K heads and one pair
    ``(chosen, rejected)`` of row indices into the N sequences per pairwise example, the pairs' margins
    ``[P]`` and, when every example has a ``prompt_index``, each sequence's prompt id ``[N]``.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    sequences: list[list[int]] = []
    labels: list[list[int]] = []
    pairs: list[tuple[int, int]] = []
    pair_dims: list[int] = []
    margins: list[float] = []
    prompt_ids: list[int] = []
    for example in examples:
        ids, example_labels = example["input_ids"], example["labels"]
        if len(ids) not in (1, 2) or len(example_labels) != len(ids):
            raise ValueError(
                f"an example needs 1 or 2 sequences with one label row each, got {len(ids)} sequence(s) "
                f"and {len(example_labels)} label row(s)"
            )
        if len(ids) == 2:
            pairs.append((len(sequences), len(sequences) + 1))
            pair_dim = example.get("pair_dim")
            pair_dims.append(ALL_HEADS if pair_dim is None else pair_dim)
            margins.append(float(example.get("margin", 0.0)))
        if "prompt_index" in example:
            prompt_ids.extend([example["prompt_index"]] * len(ids))
        sequences.extend(ids)
        labels.extend(example_labels)

    num_heads = {len(row) for row in labels}
    if len(num_heads) != 1:
        raise ValueError(f"examples disagree on the number of heads: {sorted(num_heads)}")
    if any(len(seq) == 0 for seq in sequences):
        raise ValueError("cannot collate an empty sequence")
    input_ids, attention_mask = right_pad(sequences, pad_token_id)
    return RewardBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=torch.tensor(labels, dtype=torch.long),
        pairs=torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        pair_dims=torch.tensor(pair_dims, dtype=torch.long),
        pair_margins=torch.tensor(margins, dtype=torch.float32),
        prompt_ids=torch.tensor(prompt_ids, dtype=torch.long) if len(prompt_ids) == len(sequences) else None,
    )


def right_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> ``input_ids [N, T]`` right-padded to the longest, ``attention_mask [N, T]``."""
    longest = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask
