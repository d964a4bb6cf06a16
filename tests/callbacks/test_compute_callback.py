"""ComputeCallback: the compute record of a run (tokens counted by hand, device-hours, peak memory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

from moslim_pl.callbacks import ComputeCallback
from moslim_pl.data import PreferenceDataModule
from moslim_pl.data.sources import SyntheticConfig
from moslim_pl.modules import RewardModelModule

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def test_compute_record_counts_real_tokens(tmp_path: Path) -> None:
    data = PreferenceDataModule(
        synthetic=SyntheticConfig(num_prompts=20, responses_per_prompt=2), batch_size=4
    )
    module = RewardModelModule(backbone="moslim/tiny-llama", tiny_config=TINY)
    counted: list[int] = []

    class Spy(ComputeCallback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            counted.append(int(batch.attention_mask.sum()))
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    trainer = Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=CSVLogger(tmp_path),
        callbacks=[Spy()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=data)
    record = json.loads((Path(trainer.log_dir) / "compute.json").read_text())
    assert len(counted) == 3 and record["tokens"] == sum(counted) > 0
    assert record["stage"] == "RewardModelModule" and record["optimizer_steps"] == 3
    assert record["device_type"] == "cpu" and record["num_devices"] == 1
    assert record["device_hours"] == pytest.approx(record["wall_seconds"] / 3600, rel=1e-3)
    assert record["peak_memory_bytes"] > 10 * 2**20  # a Python process with torch loaded
