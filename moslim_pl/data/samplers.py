"""A resumable, self-sharding training sampler: its order is a pure function of ``(seed, epoch)``.

:class:`ResumableSampler` yields item indices; its ``state_dict`` ``{seed, epoch, position}`` travels in a
datamodule's ``state_dict`` so that a run killed mid-epoch resumes at the same place in the same order.
:class:`LengthGroupedSampler` reorders each epoch into batches of similar lengths (less padding);
:class:`moslim_pl.data.prompts.PrefixSampler` builds on it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DistributedSampler

from moslim_pl.errors import MoslimError
from moslim_pl.utils.distributed import rank_and_world

log = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """Shuffles ``num_items`` indices each epoch and resumes mid-epoch from a ``state_dict``.

    Epoch ``e``'s order is the one a ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(
    seed))`` visits in its ``e``-th pass under Lightning (the generator's draws are replayed), so swapping
    that loader for this sampler keeps a straight run's order. Lightning calls :meth:`set_epoch` before each epoch; a plain
    loop that does not advances one epoch per completed pass.

    It shards itself across ranks (rank ``r`` of ``W`` takes positions ``r, r + W, ...`` of the epoch's
    order, the last ones cycled so that every rank gets as many), which is why it is a
    ``DistributedSampler``: Lightning then leaves it unwrapped. A resumed pass starts at the restored
    position and is shorter; Lightning's own wrapper indexes a list of the whole epoch and failed on it.

    Subclasses change :meth:`order` (the visiting order) and :meth:`item` (what is yielded for a position).

    Args:
        num_items: the dataset's length.
        seed: seeds the order.
        shuffle: shuffle the items each epoch (else dataset order).
        batch_size: the batch size of the loader whose order is replayed (with ``drop_last=False``); it
            decides whether a pass ended with an extra draw. ``None``: as if ``num_items`` were a multiple.
    """

    #: names the seed in the warning of a checkpoint that brings another one
    seed_name = "sampler"

    def __init__(
        self, num_items: int, seed: int = 0, shuffle: bool = True, batch_size: int | None = None
    ) -> None:
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0  # items yielded in the current epoch
        self._exhausted = False  # a pass ended and no set_epoch came since
        self._resume_at: tuple[int, int] | None = None  # (epoch, position) of a restored state
        # DistributedSampler.__init__ is not called: it wants a dataset and a process group up front,
        # while the ranks are read at iteration (``_ranks``).

    def order(self, epoch: int) -> list[int]:
        """The item indices of ``epoch`` in visiting order."""
        return self._permutation(epoch)[0]

    def _permutation(self, epoch: int) -> tuple[list[int], torch.Generator | None]:
        """``epoch``'s shuffled indices and the seeded generator that drew them, left where it stopped
        (``None`` without shuffling): a subclass may draw more from it, still a pure function of
        ``(seed, epoch)``."""
        if not self.shuffle:
            return list(range(self.num_items)), None
        # Replays a seeded DataLoader's generator as Lightning drives it: each pass draws the loader's
        # base seed, then the RandomSampler's permutation. Lightning stops after ``len`` batches, so the
        # RandomSampler's closing (empty-sliced) permutation is drawn only when the batch sampler has to
        # exhaust it to yield a partial last batch.
        closing = self.batch_size is not None and self.num_items % self.batch_size != 0
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            order = torch.randperm(self.num_items, generator=generator).tolist()
            if closing:
                torch.randperm(self.num_items, generator=generator)
        return order, generator

    def item(self, epoch: int, position: int, index: int) -> Any:
        """What the sampler yields at ``position`` of ``epoch``, whose order puts ``index`` there."""
        return index

    # ------------------------------------------------------------------ iteration
    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._exhausted = False

    @staticmethod
    def _ranks() -> tuple[int, int]:
        """``(world_size, rank)`` of the default process group, ``(1, 0)`` without one."""
        rank, world = rank_and_world()
        return world, rank

    def __len__(self) -> int:
        """This rank's share of a whole epoch. A resumed pass yields fewer: Lightning counts the batches it
        restored as done, so the epoch still ends after ``len`` batches in all."""
        world, _ = self._ranks()
        return -(-self.num_items // world)

    def __iter__(self) -> Iterator[Any]:
        if self._exhausted:
            self.epoch += 1
        start = 0
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            start = self._resume_at[1]
        self._resume_at, self._exhausted = None, False
        epoch = self.epoch
        order = self.order(epoch)
        world, rank = self._ranks()
        positions = list(range(start, len(order)))
        share = -(-len(positions) // world)
        if positions:  # cycle the pass so that every rank takes the same number of items
            positions = [positions[i % len(positions)] for i in range(share * world)]
        for position in positions[rank::world]:
            self.position = position + 1
            yield self.item(epoch, position, order[position])
        self._exhausted = True

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``: the next pass continues its epoch after ``position`` items."""
        if int(state["seed"]) != self.seed:
            log.warning(
                "the checkpoint's %s seed %s replaces the configured seed %s",
                self.seed_name,
                state["seed"],
                self.seed,
            )
            self.seed = int(state["seed"])
        epoch, position = int(state["epoch"]), int(state["position"])
        if position >= self.num_items:  # the epoch had ended
            epoch, position = epoch + 1, 0
        self.epoch, self.position = epoch, position
        self._resume_at, self._exhausted = (epoch, position), False


class LengthGroupedSampler(ResumableSampler):
    """A :class:`ResumableSampler` whose epochs come in batches of items of similar length.

    Dynamic padding pads a batch to its longest item, so batching items of similar lengths trains on
    fewer pad tokens. Epoch ``e`` starts from :class:`ResumableSampler`'s seeded permutation, which is cut
    into groups of ``batch_size * group_size`` items (50 batches by default, like Hugging Face's
    ``LengthGroupedSampler``; and, like it, smaller on a small epoch so that the epoch still holds
    ``min_groups`` groups and a batch's company changes from epoch to epoch: a single sorted group would
    batch the same neighbours in length every epoch); each group is sorted by length, longest first
    (ties keep the permutation's order), and cut into batches of ``batch_size``. With ``shuffle_batches``
    the whole batches are then shuffled by the same seeded generator, so that long batches do not always
    open a group; the one partial batch (``num_items % batch_size`` items) stays last, so the loader's
    batches line up with these ones. The order stays a pure function of ``(seed, epoch)`` (and the
    number of ranks), and epochs, ``state_dict`` and resuming are :class:`ResumableSampler`'s.

    Across ``W`` ranks, rank ``r`` takes every ``W``-th position, so each run of ``W`` consecutive batches
    is interleaved (position ``k * W * batch_size + j * W + r`` holds item ``j`` of batch ``k * W + r``):
    every rank's loader then batches exactly one of these length-homogeneous batches per step. The batches
    themselves do not depend on ``W``; the epoch's last run of fewer than ``W`` full batches (and the
    partial one) is laid out plainly, so the last batch of a rank may mix lengths. A run resumed on
    another number of ranks keeps the batches but interleaves them anew.

    Args:
        lengths: each item's length (for padding: the longest of its sequences).
        batch_size: the loader's batch size (items per rank and step).
        seed: seeds the order.
        shuffle: shuffle the items each epoch (else the groups are cut from dataset order).
        group_size: batches per group sorted by length; larger groups pad less but mix less.
        min_groups: cut an epoch into at least this many groups (groups of at least one batch);
            ``1``: groups of ``group_size`` batches whatever the epoch's length.
        shuffle_batches: shuffle the batches (only when ``shuffle``).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        group_size: int = 50,
        min_groups: int = 4,
        shuffle_batches: bool = True,
    ) -> None:
        if min(batch_size, group_size, min_groups) < 1:
            raise MoslimError(
                "batch_size, group_size and min_groups must be at least 1, got "
                f"{batch_size}, {group_size} and {min_groups}"
            )
        self.lengths = [int(length) for length in lengths]
        self.group_size = group_size
        self.min_groups = min_groups
        self.shuffle_batches = shuffle_batches
        super().__init__(len(self.lengths), seed, shuffle, batch_size)

    @property
    def group_batches(self) -> int:
        """Batches per sorted group: ``group_size``, at most ``1 / min_groups`` of the epoch's batches
        (at least 1)."""
        if self.min_groups == 1:
            return self.group_size
        return max(1, min(self.group_size, self.num_items // (self.min_groups * self.batch_size)))

    def batches(self, epoch: int) -> list[list[int]]:
        """``epoch``'s batches in visiting order, whatever the number of ranks."""
        order, generator = self._permutation(epoch)
        size, span = self.batch_size, self.batch_size * self.group_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            group = sorted(order[start : start + span], key=lambda i: -self.lengths[i])
            batches += [group[i : i + size] for i in range(0, len(group), size)]
        if self.shuffle_batches and generator is not None:
            full = self.num_items // size  # the partial batch, if any, is the last one
            shuffled = torch.randperm(full, generator=generator).tolist()
            batches = [batches[i] for i in shuffled] + batches[full:]
        return batches

    def order(self, epoch: int) -> list[int]:
        """The item indices of ``epoch`` in visiting order: :meth:`batches`, interleaved across ranks."""
        world, _ = self._ranks()
        batches = self.batches(epoch)
        order: list[int] = []
        for start in range(0, len(batches), world):
            run = batches[start : start + world]
            if len(run) == world and all(len(batch) == self.batch_size for batch in run):
                order += [batch[j] for j in range(self.batch_size) for batch in run]
            else:
                order += [index for batch in run for index in batch]
        return order


def fit_position(state: dict[str, int], trainer: Any, batch_size: int) -> dict[str, int]:
    """``state`` with ``position`` counted from the batches trained, while ``trainer`` fits.

    The loader runs ahead of training (prefetch, workers), so the sampler's own position is past the
    batches done; each rank takes every world_size-th item of the sampler's order.
    """
    if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        state = {**state, "position": batches * batch_size * trainer.world_size}
    return state


class SamplerStateMixin:
    """``state_dict`` / ``load_state_dict`` of a LightningDataModule whose train loader draws from
    ``self.sampler`` (a :class:`ResumableSampler`, ``None`` until ``setup``); a state loaded before
    ``setup`` waits in ``self._pending_state`` for ``setup`` to apply it. Needs ``batch_size``."""

    sampler: ResumableSampler | None
    _pending_state: dict[str, Any] | None
    batch_size: int

    def state_dict(self) -> dict[str, Any]:
        """The training sampler's ``{seed, epoch, position}``, saved in every checkpoint."""
        if self.sampler is None:
            return dict(self._pending_state or {})
        return fit_position(self.sampler.state_dict(), self.trainer, self.batch_size)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.sampler is None:
            self._pending_state = dict(state_dict)
        else:
            self.sampler.load_state_dict(state_dict)
