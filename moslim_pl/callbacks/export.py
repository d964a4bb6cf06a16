"""ExportCallback: write the trained model as a Hugging Face-format folder when fit ends."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


class ExportCallback(Callback):
    """Call ``pl_module.export(dirpath)`` at the end of fit, on every rank.

    Every rank takes part because a model sharded with FSDP is gathered for the export (a collective);
    the modules' ``export`` methods write on rank 0 only.

    Before exporting it runs the end-of-fit re-estimation of any ``RewardStatsCallback`` (once per fit),
    so the export carries the final statistics wherever the two callbacks sit in the list.

    Args:
        dirpath: the export folder; ``None`` puts it at ``<trainer.log_dir>/export``.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def resolve_dirpath(self, trainer: Trainer) -> Path:
        if self.dirpath is not None:
            return Path(self.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "export"

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from moslim_pl.callbacks.stats import RewardStatsCallback

        for callback in trainer.callbacks:
            if isinstance(callback, RewardStatsCallback):
                callback.finalize(trainer, pl_module)
        folder = self.resolve_dirpath(trainer)
        pl_module.export(folder)
        if trainer.is_global_zero:
            log.info("exported %s to %s", type(pl_module).__name__, folder)
        trainer.strategy.barrier("moslim_export")
