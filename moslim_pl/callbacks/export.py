"""ExportCallback: write the trained model as a Hugging Face-format folder when fit ends."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from moslim_pl.callbacks.progress import progress
from moslim_pl.callbacks.stats import RewardStatsCallback

log = logging.getLogger(__name__)


class ExportCallback(Callback):
    """Call ``pl_module.export(dirpath)`` at the end of fit, on every rank.

    Every rank takes part because a model sharded with FSDP is gathered for the export (a collective);
    the modules' ``export`` methods write on rank 0 only.

    Before exporting it runs the end-of-fit re-estimation of any ``RewardStatsCallback`` (once per fit),
    so the export carries the final statistics wherever the two callbacks sit in the list. A progress bar
    (``export to <folder>``) shows the two steps unless the trainer's progress bar is disabled.

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
        stats = [callback for callback in trainer.callbacks if isinstance(callback, RewardStatsCallback)]
        folder = self.resolve_dirpath(trainer)
        # one step per statistics pass (each shows its own bar), one for the export itself
        with progress(trainer, len(stats) + 1, f"export to {folder}") as advance:
            for callback in stats:
                callback.finalize(trainer, pl_module)
                advance(1)
            pl_module.export(folder)
            advance(1)
        if trainer.is_global_zero:
            log.info("exported %s to %s", type(pl_module).__name__, folder)
        trainer.strategy.barrier("moslim_export")
