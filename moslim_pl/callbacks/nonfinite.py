"""NonFiniteGuard: an optimizer step whose gradients hold a NaN or an infinity is skipped, not taken.

A NaN reward (a broken RM output), a NaN or infinite loss, or an overflowing backward pass all end as
non-finite gradients, and one such step would write NaN into every weight it touches. The guard looks
at the gradients just before each optimizer step (after the backward pass and gradient clipping; in
every module, automatic or manual optimization). When any gradient on any rank is non-finite it drops
all gradients, so the optimizer leaves the weights and its moments as they were; the learning-rate
schedule still advances. It warns, and logs ``train/nonfinite_steps`` (skipped steps so far). After
``max_consecutive`` skipped steps in a row it writes ``nonfinite-stop.ckpt`` (the last good weights and
optimizer state) next to the run's checkpoints and stops the run with a :class:`NonFiniteError`.

With ``precision: 16-mixed`` the GradScaler already skips overflowing steps and lowers its scale, which
is routine early in training, so the guard stands aside there.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer

from moslim_pl.errors import MoslimError


class NonFiniteError(MoslimError):
    """Too many optimizer steps in a row had NaN or infinite gradients."""


def _local_grads_finite(optimizer: Optimizer) -> bool:
    flags = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            if hasattr(grad, "to_local"):  # a DTensor (FSDP2): this rank's shard
                grad = grad.to_local()
            flags.append(torch.isfinite(grad).all())
    return bool(torch.stack(flags).all()) if flags else True


class NonFiniteGuard(Callback):
    """Skip optimizer steps with non-finite gradients; stop after ``max_consecutive`` in a row.

    Args:
        max_consecutive: skipped steps in a row that stop the run (>= 1).
        dirpath: where ``nonfinite-stop.ckpt`` goes; default: the ``ModelCheckpoint``'s folder, else
            ``<default_root_dir>/checkpoints``.
    """

    def __init__(self, max_consecutive: int = 5, dirpath: str | None = None) -> None:
        if max_consecutive < 1:
            raise MoslimError(f"NonFiniteGuard.max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.dirpath = dirpath
        self.skipped = 0
        self.in_a_row = 0

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        if str(trainer.precision) == "16-mixed":
            return
        bad = not _local_grads_finite(optimizer)
        # any rank: reduce_boolean_decision(all=False) is True when one rank says True
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None  # AdamW (and SGD) skip parameters without a gradient
            self.skipped += 1
            self.in_a_row += 1
            rank_zero_warn(
                f"NonFiniteGuard: NaN or infinite gradients (from the loss or the reward) at step "
                f"{trainer.global_step}; the optimizer step is skipped ({self.in_a_row} in a row, "
                f"{self.skipped} in all)"
            )
        else:
            self.in_a_row = 0
        pl_module.log("train/nonfinite_steps", float(self.skipped), on_step=True, on_epoch=False)
        if self.in_a_row >= self.max_consecutive:
            path = self._checkpoint_path(trainer)
            trainer.save_checkpoint(path)  # every rank: a collective under sharding
            raise NonFiniteError(
                f"{self.in_a_row} optimizer steps in a row had NaN or infinite gradients (loss or reward), "
                f"the last at step {trainer.global_step}; the last good state is in {path} (lower the learning "
                "rate or check the reward model's outputs, then resume with --ckpt_path)"
            )

    def _checkpoint_path(self, trainer: Trainer) -> Path:
        if self.dirpath is not None:
            folder = Path(self.dirpath)
        elif trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
            folder = Path(trainer.checkpoint_callback.dirpath)
        else:
            folder = Path(trainer.default_root_dir) / "checkpoints"
        return folder / "nonfinite-stop.ckpt"

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.in_a_row = int(state_dict.get("in_a_row", 0))
