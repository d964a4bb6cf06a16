"""ControllabilityCallback: the controllability sweep every N training steps, into the loggers."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from moslim_pl.callbacks import media
from moslim_pl.errors import MoslimError
from moslim_pl.evaluation import controllability

log = logging.getLogger(__name__)


def report(module: Any, records: Tensor, tag: str, name: str) -> dict[str, dict]:
    """Gather a LightningModule's sweep records from every rank, summarize, log and write them.

    Logs ``<tag>/spearman_oracle/<dim>`` and ``<tag>/spearman_rm/<dim>`` (through ``module.log`` in the
    test loop; during fit straight to the loggers at ``global_step``, once per sweep), a
    figure ``<tag>/controllability`` to the loggers that take figures (``callbacks/media.py``), and writes ``<name>.json`` / ``<name>.png`` into the
    trainer's log dir (rank 0). ``records [M, 4]`` (:func:`moslim_pl.evaluation.controllability.sweep_records`) must have the same ``M`` on
    every rank (a distributed sampler pads the ranks evenly). Returns the table.
    """
    gathered = module.all_gather(records)
    records = gathered.flatten(0, 1) if gathered.dim() == 3 else gathered
    table = controllability.summarize(module.rm.dimensions, records.double().cpu())
    scalars = {}
    for dim, row in table.items():
        scalars[f"{tag}/spearman_rm/{dim}"] = row["spearman_rm"]
        if row["spearman_oracle"] is not None:
            scalars[f"{tag}/spearman_oracle/{dim}"] = row["spearman_oracle"]
    trainer = module.trainer
    if trainer.training:
        # A sweep during fit is one measurement at one step. Through module.log, Lightning would write
        # its values again at every later logging step of the epoch (a flat, invented curve), so they go
        # straight to the loggers, and into callback_metrics for the model card.
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in scalars.items()})
    else:
        for key, value in scalars.items():
            module.log(key, value, rank_zero_only=True)
    # trainer.log_dir broadcasts from rank 0: a collective that every rank must join
    out_dir = Path(trainer.log_dir or trainer.default_root_dir)
    if trainer.is_global_zero:
        json_path, _ = controllability.write(table, out_dir, name)
        log.info("controllability (%s):\n%s\nwrote %s", tag, controllability.format_table(table), json_path)
        if trainer.loggers:
            from moslim_pl.evaluation.plots import plt  # matplotlib on demand, as controllability.plot does

            figure = controllability.plot(table)
            media.log_figure(trainer.loggers, f"{tag}/controllability", figure, trainer.global_step)
            plt.close(figure)
    return table


class ControllabilityCallback(Callback):
    """Sweep every dimension and level over held-out prompts every ``every_n_train_steps`` steps.

    Logs ``sweep/spearman_oracle/<dim>`` (where the data has an oracle) and ``sweep/spearman_rm/<dim>``,
    a figure ``sweep/controllability`` (requested vs achieved level; callbacks/media.py) and writes
    ``<log_dir>/controllability_step<N>.{json,png}``. Needs a policy module (``RLOOModule``, ``PPOModule``,
    ``OnlineDPOModule``) and a ``PromptDataModule``, whose first ``num_prompts`` held-out prompts are
    used; under several ranks each answers its share of them.

    Args:
        every_n_train_steps: sweep when ``global_step`` reaches a multiple of this.
        num_prompts: held-out prompts swept (each answered once per level of every dimension).
    """

    def __init__(self, every_n_train_steps: int = 400, num_prompts: int = 16) -> None:
        if every_n_train_steps < 1 or num_prompts < 1:
            raise MoslimError(
                f"every_n_train_steps and num_prompts must be >= 1, got {every_n_train_steps}, {num_prompts}"
            )
        self.every_n_train_steps = every_n_train_steps
        self.num_prompts = num_prompts
        self._last_sweep = 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        step = trainer.global_step
        # Manual optimization may take several steps per batch: sweep when a multiple has been crossed.
        if step // self.every_n_train_steps <= self._last_sweep // self.every_n_train_steps:
            return
        self._last_sweep = step
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "sweep_prompts") or not hasattr(pl_module, "sweep_records"):
            raise MoslimError("ControllabilityCallback needs a policy module and a PromptDataModule")
        prompts = datamodule.sweep_prompts()[: self.num_prompts]
        # An equal share per rank (cycled to fill the last one), as the gather of the records needs.
        share = math.ceil(len(prompts) / trainer.world_size)
        padded = [prompts[i % len(prompts)] for i in range(share * trainer.world_size)]
        mine = padded[trainer.global_rank * share : (trainer.global_rank + 1) * share]
        with torch.no_grad():
            records = pl_module.sweep_records(mine, datamodule.oracle)
        report(pl_module, records.to(pl_module.device), "sweep", f"controllability_step{step}")

    def state_dict(self) -> dict[str, int]:
        return {"last_sweep": self._last_sweep}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._last_sweep = int(state_dict.get("last_sweep", 0))
