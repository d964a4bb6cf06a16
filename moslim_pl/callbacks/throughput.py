"""ThroughputCallback: ``train/tokens_per_s`` and ``train/samples_per_s`` in every stage.

Every stage adds it itself (``configure_callbacks``; ``docs/user_guide.md``, "Logs"). Rates are measured
over the window since the previous logging step (``log_every_n_steps``), wall clock, validation excluded,
so no extra device sync is needed: the window's token count stays a device tensor until the logger
writes it (when Lightning reads every logged value anyway). Tokens are the real (non-padding) tokens
through the trained model's forward passes: the attention mask of a tokenized batch (reward model, SFT),
or the prompt and response tokens of every rollout (policy stages, ``PolicyModule.rollout_tokens``);
samples are its rows, or the rollout's sequences. Reads no RNG.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


def _attention_mask(batch: Any) -> torch.Tensor | None:
    mask = getattr(batch, "attention_mask", None)
    if mask is None and isinstance(batch, dict):
        mask = batch.get("attention_mask")
    return mask if isinstance(mask, torch.Tensor) else None


class ThroughputCallback(Callback):
    """Log ``train/tokens_per_s`` and ``train/samples_per_s`` at every logging step of training."""

    def __init__(self) -> None:
        self._reset(None)
        self._paused: float | None = None
        self._seen = (0, 0)  # a policy module's rollout tokens and samples when the window opened

    def _reset(self, start: float | None) -> None:
        self._start = start
        self._tokens: torch.Tensor | int = 0
        self._samples = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset(None)
        self._seen = (
            int(getattr(pl_module, "rollout_tokens", 0)),
            int(getattr(pl_module, "rollout_samples", 0)),
        )

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            self._start = time.perf_counter()
        if hasattr(pl_module, "rollout_tokens"):
            return  # counted from the rollouts at the batch's end
        mask = _attention_mask(batch)
        if mask is not None:
            self._tokens = self._tokens + mask.detach().sum()  # stays on the device: no sync
            self._samples += int(mask.shape[0])

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if hasattr(pl_module, "rollout_tokens"):
            tokens, samples = int(pl_module.rollout_tokens), int(getattr(pl_module, "rollout_samples", 0))
            self._tokens = self._tokens + tokens - self._seen[0]
            self._samples += samples - self._seen[1]
            self._seen = (tokens, samples)
        if self._start is None or not trainer.loggers or not trainer._logger_connector.should_update_logs:
            return
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        tokens = self._tokens
        rate = tokens.float() / elapsed if isinstance(tokens, torch.Tensor) else float(tokens) / elapsed
        pl_module.log("train/tokens_per_s", rate, on_step=True, on_epoch=False)
        pl_module.log("train/samples_per_s", self._samples / elapsed, on_step=True, on_epoch=False)
        self._reset(now)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._start is not None:  # not the sanity check before training
            self._paused = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._paused is not None and self._start is not None:
            self._start += time.perf_counter() - self._paused
        self._paused = None
