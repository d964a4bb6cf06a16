"""LengthGroupedSampler: batches of similar lengths, still seeded, resumable and sharded across ranks."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence

import pytest
import torch

from moslim_pl.data import PreferenceDataModule, SyntheticConfig
from moslim_pl.data.samplers import LengthGroupedSampler, ResumableSampler
from moslim_pl.errors import MoslimError

BATCH = 4


def _skewed_lengths(num_items: int, seed: int = 0) -> list[int]:
    """Mostly short items and a long tail, as in real preference data."""
    rng = random.Random(seed)
    return [int(rng.lognormvariate(3.5, 0.8)) + 1 for _ in range(num_items)]


def _sharded(monkeypatch: pytest.MonkeyPatch, world: int, rank: int) -> None:
    monkeypatch.setattr(ResumableSampler, "_ranks", staticmethod(lambda: (world, rank)))


def _batches(indices: Sequence[int], size: int = BATCH) -> list[list[int]]:
    """What a ``DataLoader(batch_size=size)`` batches from a rank's stream of indices."""
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def _padding(batches: list[list[int]], lengths: Sequence[int]) -> float:
    """The mean share of pad tokens in the batches, each padded to its longest item."""
    return statistics.mean(
        1 - sum(lengths[i] for i in batch) / (len(batch) * max(lengths[i] for i in batch))
        for batch in batches
    )


def _epoch(sampler: ResumableSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("num_items", [1, 5, 64, 203])
def test_each_epoch_visits_every_item_once_in_a_seeded_order(num_items: int) -> None:
    lengths = _skewed_lengths(num_items)
    sampler = LengthGroupedSampler(lengths, BATCH, seed=3)
    epochs = [_epoch(sampler, epoch) for epoch in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(num_items))
    again = LengthGroupedSampler(lengths, BATCH, seed=3)
    assert [_epoch(again, epoch) for epoch in range(3)] == epochs  # a pure function of (seed, epoch)
    if num_items >= 64:
        assert epochs[0] != epochs[1]
        assert _epoch(LengthGroupedSampler(lengths, BATCH, seed=4), 0) != epochs[0]


def test_batches_are_length_homogeneous() -> None:
    lengths = _skewed_lengths(800)
    grouped = LengthGroupedSampler(lengths, BATCH, seed=0)
    shuffled = ResumableSampler(len(lengths), seed=0, batch_size=BATCH)
    grouped_padding = _padding(_batches(_epoch(grouped, 0)), lengths)
    random_padding = _padding(_batches(_epoch(shuffled, 0)), lengths)
    assert grouped_padding < 0.2 * random_padding
    # the loader's batches are the sampler's: each sorted longest first
    assert _batches(_epoch(grouped, 1)) == grouped.batches(1)
    assert all(
        [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
        for batch in grouped.batches(1)
    )


def test_groups_sort_and_batches_shuffle() -> None:
    lengths = list(range(64))  # 16 batches: groups of 4 batches (a quarter of the epoch)
    sampler = LengthGroupedSampler(lengths, BATCH, seed=1, shuffle_batches=False)
    assert sampler.group_batches == 4
    batches = sampler.batches(0)
    group = 4 * BATCH
    for start in range(0, 16, 4):  # each group's batches descend in length
        flat = [i for batch in batches[start : start + 4] for i in batch]
        assert flat == sorted(flat, reverse=True) and len(flat) == group
    shuffled = LengthGroupedSampler(lengths, BATCH, seed=1).batches(0)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, batches)) and shuffled != batches
    # in dataset order (no shuffle) the groups are consecutive items, longest first
    plain = LengthGroupedSampler(lengths, BATCH, shuffle=False).batches(0)
    assert plain[0] == [15, 14, 13, 12] and plain[4] == [31, 30, 29, 28]
    assert LengthGroupedSampler(lengths, BATCH, group_size=2).group_batches == 2
    assert LengthGroupedSampler(lengths, BATCH, min_groups=2).group_batches == 8
    whole = LengthGroupedSampler(lengths, BATCH, seed=1, min_groups=1, shuffle_batches=False).batches(0)
    assert [i for batch in whole for i in batch] == list(range(63, -1, -1))  # one group: all sorted
    with pytest.raises(MoslimError):
        LengthGroupedSampler(lengths, 0)


def test_the_partial_batch_stays_last() -> None:
    lengths = _skewed_lengths(4 * 50 + 3)
    sampler = LengthGroupedSampler(lengths, 4, seed=2)
    for epoch in range(3):
        sizes = [len(batch) for batch in _batches(_epoch(sampler, epoch))]
        assert sizes == [4] * 50 + [3]
        assert _batches(list(sampler)) == sampler.batches(epoch + 1)


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("batches_done", [0, 3, 11])
def test_resume_gives_the_rest_of_the_epoch(
    monkeypatch: pytest.MonkeyPatch, world: int, batches_done: int
) -> None:
    lengths, epoch = _skewed_lengths(100), 1
    # the checkpoint counts the items of all ranks (``fit_position``: batches x batch_size x world)
    position = batches_done * BATCH * world
    for rank in range(world):
        _sharded(monkeypatch, world, rank)
        straight = LengthGroupedSampler(lengths, BATCH, seed=5)
        whole = _epoch(straight, epoch)
        resumed = LengthGroupedSampler(lengths, BATCH, seed=5)
        resumed.load_state_dict({"seed": 5, "epoch": epoch, "position": position})
        rest = _epoch(resumed, epoch)
        assert rest == whole[batches_done * BATCH :]
        assert _epoch(resumed, epoch + 1) == _epoch(straight, epoch + 1)


def test_state_dict_of_a_running_sampler() -> None:
    lengths = _skewed_lengths(40)
    sampler = LengthGroupedSampler(lengths, BATCH, seed=2)
    items = iter(sampler)
    done = [next(items) for _ in range(12)]
    state = sampler.state_dict()
    assert state == {"seed": 2, "epoch": 0, "position": 12}
    restored = LengthGroupedSampler(lengths, BATCH, seed=2)
    restored.load_state_dict(state)
    assert done + list(restored) == sampler.order(0)


@pytest.mark.parametrize("num_items", [160, 163])
def test_two_ranks_cover_the_epoch_with_homogeneous_batches(
    monkeypatch: pytest.MonkeyPatch, num_items: int
) -> None:
    lengths = _skewed_lengths(num_items, seed=1)
    streams = []
    for rank in range(2):
        _sharded(monkeypatch, 2, rank)
        sampler = LengthGroupedSampler(lengths, BATCH, seed=0)
        streams.append(_epoch(sampler, 0))
        assert len(streams[-1]) == len(sampler) == -(-num_items // 2)
    visited = streams[0] + streams[1]
    assert set(visited) == set(range(num_items))
    assert len(visited) - num_items == (num_items % 2)  # the ranks' shares are evened out by one repeat
    # every rank batches whole batches of the rank-independent list, except at the very end
    batches = LengthGroupedSampler(lengths, BATCH, seed=0).batches(0)
    full_runs = num_items // (2 * BATCH)
    for rank, stream in enumerate(streams):
        rank_batches = _batches(stream)
        assert rank_batches[:full_runs] == batches[rank : 2 * full_runs : 2]
    random_order = ResumableSampler(num_items, seed=0).order(0)
    random_padding = statistics.mean(
        _padding(_batches(random_order[rank::2])[:full_runs], lengths) for rank in range(2)
    )
    for stream in streams:
        assert _padding(_batches(stream)[:full_runs], lengths) < 0.5 * random_padding


def test_the_datamodule_option_pads_less() -> None:
    def padding(group_by_length: bool) -> tuple[float, int, type]:
        dm = PreferenceDataModule(
            synthetic=SyntheticConfig(num_prompts=60, responses_per_prompt=4),
            batch_size=8,
            group_by_length=group_by_length,
        )
        dm.setup("fit")
        masks = [batch.attention_mask for batch in dm.train_dataloader()]
        pad = sum(int((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)
        assert dm.hparams.group_by_length is group_by_length
        return pad, sum(m.shape[0] for m in masks), type(dm.sampler)

    plain, rows, kind = padding(False)
    grouped, grouped_rows, grouped_kind = padding(True)
    assert (kind, grouped_kind) == (ResumableSampler, LengthGroupedSampler)
    assert grouped_rows == rows
    assert grouped < 0.5 * plain


def test_the_datamodule_resumes_a_grouped_epoch() -> None:
    def datamodule() -> PreferenceDataModule:
        dm = PreferenceDataModule(
            synthetic=SyntheticConfig(num_prompts=30, responses_per_prompt=4),
            batch_size=4,
            group_by_length=True,
        )
        dm.setup("fit")
        return dm

    straight = [batch.input_ids for batch in datamodule().train_dataloader()]
    resumed = datamodule()
    resumed.load_state_dict({"seed": 0, "epoch": 0, "position": 5 * 4})
    rest = [batch.input_ids for batch in resumed.train_dataloader()]
    assert len(rest) == len(straight) - 5
    assert all(torch.equal(a, b) for a, b in zip(rest, straight[5:], strict=True))
