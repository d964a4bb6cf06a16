"""PredictionWriter: the responses of ``moslim-pl predict`` as one JSONL file, written atomically."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from moslim_pl.utils.io import atomic_file

log = logging.getLogger(__name__)


def _rows(predictions: Sequence[Any]) -> list[dict[str, Any]]:
    """Flatten Lightning's per-batch (and, with several loaders, per-loader) lists of row dicts."""
    rows: list[dict[str, Any]] = []
    for item in predictions:
        if isinstance(item, dict):
            rows.append(item)
        else:
            rows.extend(_rows(item))
    return rows


class PredictionWriter(BasePredictionWriter):
    """Write every predicted row (``{"index", "prompt", "response", "reward", "levels"}``) as JSONL.

    Rows from all ranks are gathered, the duplicates a distributed sampler adds are dropped, and rank 0
    writes them in the input file's order to ``output`` (default ``<log_dir>/predictions.jsonl``) through
    a temporary file and a rename: an interrupted run never leaves a half-written file.

    Args:
        output: the JSONL file; ``None`` puts it in the trainer's log dir.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def resolve_output(self, trainer: Trainer) -> Path:
        if self.output is not None:
            return Path(self.output)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl"

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        rows = _rows(predictions)
        path = self.resolve_output(trainer)  # trainer.log_dir is a collective: every rank resolves it
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            everyone: list[list[dict[str, Any]] | None] = [None] * trainer.world_size
            dist.all_gather_object(everyone, rows)
            rows = [row for part in everyone for row in part or []]
        if not trainer.is_global_zero:
            return
        if all(row.get("index") is not None for row in rows):
            unique = {row["index"]: row for row in rows}  # the sampler's padding repeats rows
            ordered = [unique[i] for i in sorted(unique)]
        else:  # plain prompt strings from a user's own loader: no index to order or dedupe by
            ordered = rows
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ordered), encoding="utf-8"
            )
        log.info("wrote %d responses to %s", len(ordered), path)
