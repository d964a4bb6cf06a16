"""ResumableSampler: a seeded loader's order (as Lightning reads it), restored mid-epoch on every rank."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import DataLoader

from moslim_pl.data.samplers import ResumableSampler


def _sharded(monkeypatch: pytest.MonkeyPatch, world: int, rank: int) -> None:
    monkeypatch.setattr(ResumableSampler, "_ranks", staticmethod(lambda: (world, rank)))


@pytest.mark.parametrize("num_items", [1, 4, 7, 36, 37])
def test_order_is_the_seeded_shuffling_loaders(num_items: int) -> None:
    loader = DataLoader(
        list(range(num_items)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    sampler = ResumableSampler(num_items, seed=3, batch_size=4)
    for epoch in range(3):
        # Lightning takes len(loader) batches and never reaches the sampler's StopIteration
        batches = itertools.islice(iter(loader), len(loader))
        assert [int(i) for batch in batches for i in batch] == sampler.order(epoch)
        sampler.set_epoch(epoch)
        assert list(sampler) == sampler.order(epoch)
    assert ResumableSampler(5, shuffle=False).order(2) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("position", [0, 6, 10, 18])
def test_resume_continues_the_epoch_on_every_rank(
    monkeypatch: pytest.MonkeyPatch, world: int, position: int
) -> None:
    num_items, epoch = 20, 1
    for rank in range(world):
        _sharded(monkeypatch, world, rank)
        straight = ResumableSampler(num_items, seed=5)
        straight.set_epoch(epoch)
        whole = list(straight)
        assert len(whole) == len(straight) == num_items // world
        # the checkpoint counts the items of all ranks: each rank's first position // world are done
        resumed = ResumableSampler(num_items, seed=5)
        resumed.load_state_dict({"seed": 5, "epoch": epoch, "position": position})
        resumed.set_epoch(epoch)
        rest = list(resumed)
        assert rest == whole[position // world :]
        # the pass after the resumed one is the next whole epoch
        resumed.set_epoch(epoch + 1)
        straight.set_epoch(epoch + 1)
        assert list(resumed) == list(straight)


def test_state_and_an_ended_epoch() -> None:
    sampler = ResumableSampler(6, seed=2)
    items = iter(sampler)
    [next(items) for _ in range(4)]
    assert sampler.state_dict() == {"seed": 2, "epoch": 0, "position": 4}
    restored = ResumableSampler(6, seed=9)
    restored.load_state_dict({"seed": 2, "epoch": 0, "position": 6})
    assert restored.seed == 2 and (restored.epoch, restored.position) == (1, 0)
    assert list(restored) == ResumableSampler(6, seed=2).order(1)
    assert list(restored) == ResumableSampler(6, seed=2).order(2)  # no set_epoch: the next epoch
