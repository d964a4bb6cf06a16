"""RewardStatsCallback: running mean and std of every (head, level) probability, kept in the RM's buffers.

The Gaussian reward mapping z-scores ``p_k[t]`` with these statistics, so they must describe the
distribution of the RM's outputs. During training they are an exponential moving average over the
training batches (under the weights of the moment); with ``reestimate_at_end`` they are recomputed
exactly over the training set with the final weights, which is what the policy stage should use.
Sums are all-reduced across ranks, so every rank holds the same statistics. A batch with a non-finite
probability (on any rank) never enters them, and ``ExportCallback`` asks for the re-estimation before it
exports, so the export carries the final statistics whatever the order of the two callbacks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from moslim_pl.callbacks.progress import progress
from moslim_pl.data.types import RewardBatch
from moslim_pl.rewards.stats import StatSums, add_sums, ema_update, probability_sums

log = logging.getLogger(__name__)


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an iterable dataset
        return None


class RewardStatsCallback(Callback):
    """Keep ``rm.stats_mean``/``rm.stats_std`` [K, L] up to date.

    Args:
        momentum: weight of the newest batch in the moving average, in (0, 1].
        reestimate_at_end: at the end of fit, recompute the statistics over the training set with the
            final weights (and re-save the ``last`` checkpoint so it carries them).
        reestimate_max_batches: cap on the batches used by the re-estimation (``None``: all).

    The re-estimation shows a progress bar (``reward statistics``) unless the trainer's is disabled.
    """

    def __init__(
        self,
        momentum: float = 0.05,
        reestimate_at_end: bool = True,
        reestimate_max_batches: int | None = None,
    ) -> None:
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"RewardStatsCallback.momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.reestimate_at_end = reestimate_at_end
        self.reestimate_max_batches = reestimate_max_batches

    @staticmethod
    def _reduce(trainer: Trainer, sums: StatSums) -> StatSums:
        return StatSums(*(trainer.strategy.reduce(t, reduce_op="sum") for t in sums))

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        probs = outputs.get("probs") if isinstance(outputs, dict) else None
        if probs is None:
            raise RuntimeError("RewardStatsCallback needs training_step to return {'loss', 'probs'}")
        sums = self._reduce(trainer, probability_sums(probs))
        # A NaN/inf on any rank makes the all-reduced sums non-finite on every rank: all skip alike.
        if not (torch.isfinite(sums.total).all() and torch.isfinite(sums.total_sq).all()):
            log.warning(
                "step %d: non-finite probabilities, kept out of the reward statistics", trainer.global_step
            )
            return
        rm = pl_module.rm
        batch_mean, batch_std = sums.moments()
        if float(rm.stats_count) == 0.0:
            mean, std = batch_mean, batch_std
        else:
            mean, std = ema_update(
                rm.stats_mean.double(), rm.stats_std.double(), batch_mean, batch_std, self.momentum
            )
        rm.stats_mean.copy_(mean.to(rm.stats_mean.dtype))
        rm.stats_std.copy_(std.to(rm.stats_std.dtype))
        rm.stats_count.add_(sums.count.to(rm.stats_count.dtype))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reestimated = False

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.finalize(trainer, pl_module)

    @torch.no_grad()
    def finalize(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The end-of-fit re-estimation, once per fit: ``ExportCallback`` calls it before exporting,
        this callback's ``on_train_end`` otherwise."""
        if (
            getattr(self, "_reestimated", False)
            or not self.reestimate_at_end
            or trainer.train_dataloader is None
        ):
            return
        self._reestimated = True
        was_training = pl_module.training
        pl_module.eval()
        rm = pl_module.rm
        zeros = torch.zeros(rm.stats_mean.shape, dtype=torch.float64, device=rm.stats_mean.device)
        # Starts at zero rows (not None) so that every rank takes part in the all-reduce below.
        total = StatSums(zeros, zeros.clone(), zeros.new_zeros(()))
        skipped = 0
        total_batches = _length(trainer.train_dataloader)
        if self.reestimate_max_batches is not None:
            total_batches = min(total_batches or self.reestimate_max_batches, self.reestimate_max_batches)
        with progress(trainer, total_batches, "reward statistics") as advance:
            for i, batch in enumerate(trainer.train_dataloader):
                if self.reestimate_max_batches is not None and i >= self.reestimate_max_batches:
                    break
                advance(1)
                batch: RewardBatch = trainer.strategy.batch_to_device(batch)
                # Through the strategy's wrapper (DDP, FSDP1), whose forward gathers a sharded root; the
                # module's forward gives logits whose padded levels softmax to exactly 0.
                logits = trainer.strategy.model(batch.input_ids, batch.attention_mask)
                probs = logits.float().softmax(-1)
                sums = probability_sums(probs)
                if not (torch.isfinite(sums.total).all() and torch.isfinite(sums.total_sq).all()):
                    skipped += 1
                    continue
                total = add_sums(total, sums)
        pl_module.train(was_training)
        if skipped:
            log.warning("%d batch(es) with non-finite probabilities left out of the re-estimation", skipped)
        total = self._reduce(trainer, total)
        if float(total.count) == 0:
            return
        mean, std = total.moments()
        rm.stats_mean.copy_(mean.to(rm.stats_mean.dtype))
        rm.stats_std.copy_(std.to(rm.stats_std.dtype))
        rm.stats_count.copy_(total.count.to(rm.stats_count.dtype))
        log.info("re-estimated reward statistics over %d training rows", int(total.count))
        for checkpoint in trainer.checkpoint_callbacks:
            if isinstance(checkpoint, ModelCheckpoint) and checkpoint.last_model_path:
                trainer.save_checkpoint(checkpoint.last_model_path)
