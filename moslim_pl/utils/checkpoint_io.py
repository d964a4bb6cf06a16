"""Lightning's checkpoint IO, written atomically (:func:`moslim_pl.utils.io.atomic_file`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from moslim_pl.utils.io import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` writing each checkpoint to a hidden temporary file in the target's
    folder, flushed to disk, then renamed over the target: a kill mid-write leaves the previous checkpoint
    whole. (Lightning's own save stages the file in the system's temp folder and moves it, which is a
    copy, not a rename, when that is another file system.) ``moslim-pl`` installs it on every trainer
    whose strategy writes checkpoints through a plain ``TorchCheckpointIO``; pass it as
    ``Trainer(plugins=[AtomicCheckpointIO()])`` in Python. Remote paths (``s3://...``) use Lightning's
    save. Loading is ``torch.load(weights_only=True)`` unless a caller asks otherwise: a checkpoint
    holds tensors and plain Python values only, so no pickled code runs when one is read.
    """

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        kwargs = {} if map_location is None else {"map_location": map_location}  # else Lightning's: CPU
        return super().load_checkpoint(
            path, weights_only=True if weights_only is None else weights_only, **kwargs
        )

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_file(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)
