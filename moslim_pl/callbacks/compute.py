"""ComputeCallback: what a run cost (wall time, device-hours, tokens, peak memory), as JSON next to the logs.

The paper compares methods at their GPU-hours (MOSLIM 164 against 196-400 for the baselines); this
callback gives every run of this framework the same accounting, so a comparison can add them up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from moslim_pl.utils.io import atomic_file
from moslim_pl.utils.memory import peak_memory_bytes


def _batch_tokens(batch: Any) -> int:
    """Real (non-padding) tokens of a tokenized batch: the sum of its ``attention_mask``; 0 otherwise."""
    mask = getattr(batch, "attention_mask", None)
    if mask is None and isinstance(batch, dict):
        mask = batch.get("attention_mask")
    return int(mask.sum()) if isinstance(mask, torch.Tensor) else 0


class ComputeCallback(Callback):
    """Write ``<log_dir>/compute.json`` when fit ends (rank 0), summed over all ranks where it adds up.

    Fields: ``wall_seconds`` (fit start to end), ``device_type``, ``num_devices`` (world size),
    ``device_hours`` (``wall_seconds * num_devices / 3600``), ``tokens`` (real tokens through the
    training forward passes, all ranks: the attention mask of tokenized batches, or the prompt and
    response tokens of every rollout of the policy modules), ``optimizer_steps``, ``peak_memory_bytes``
    (the largest rank's: CUDA's peak allocation on GPUs, the process's peak RSS on the CPU) and
    ``stage`` (the LightningModule's class). ``moslim_pl.evaluation.compute.total`` adds files up.

    Args:
        filename: the JSON file's name inside the log dir.
    """

    def __init__(self, filename: str = "compute.json") -> None:
        self.filename = filename
        self._start = 0.0
        self._tokens = 0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()
        self._tokens = 0
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens += _batch_tokens(batch)

    def summary(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The record of this run so far (collective: every rank must call it)."""
        wall = time.perf_counter() - self._start
        device = pl_module.device
        tokens = self._tokens + int(getattr(pl_module, "rollout_tokens", 0))
        peak = peak_memory_bytes(device)
        totals = torch.tensor([float(tokens)], dtype=torch.float64, device=device)
        totals = trainer.strategy.reduce(totals, reduce_op="sum")
        peak_all = trainer.strategy.reduce(torch.tensor(float(peak), device=device), reduce_op="max")
        return {
            "stage": type(pl_module).__name__,
            "wall_seconds": wall,
            "device_type": device.type,
            "num_devices": trainer.world_size,
            "device_hours": wall * trainer.world_size / 3600.0,
            "tokens": int(totals[0]),
            "optimizer_steps": trainer.global_step,
            "peak_memory_bytes": int(peak_all),
        }

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = self.summary(trainer, pl_module)
        # trainer.log_dir broadcasts from rank 0: a collective that every rank must join
        path = Path(trainer.log_dir or trainer.default_root_dir) / self.filename
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as tmp:
                tmp.write_text(json.dumps(record, indent=2) + "\n")
