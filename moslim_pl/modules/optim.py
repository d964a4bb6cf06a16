"""The optimizer every stage uses: AdamW without decay on biases and norms, linear warm-up then constant."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from moslim_pl.callbacks.throughput import ThroughputCallback
from moslim_pl.errors import MoslimError

log = logging.getLogger(__name__)


def adamw_with_warmup(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    learning_rate: float,
    weight_decay: float,
    warmup_steps: int,
    lr_for: Callable[[str], float] | None = None,
) -> dict[str, Any]:
    """``configure_optimizers``'s answer; ``lr_for(name)`` may give some parameters their own rate."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        lr = lr_for(name) if lr_for is not None else learning_rate
        # no decay on biases and norms, as is usual for transformers
        decay = 0.0 if param.ndim < 2 or "norm" in name.lower() else weight_decay
        groups.setdefault((lr, decay), []).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()], lr=learning_rate
    )
    warmup = max(int(warmup_steps), 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


DECAYS = ("constant", "linear", "cosine")


class WarmupDecayLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up over ``warmup_steps`` (as every stage's own schedule), then constant, linear or cosine
    decay to ``min_lr_ratio`` times the peak at ``total_steps``. Steps are optimizer steps.

    From YAML or the command line (``docs/user_guide.md``, "Lightning's own knobs")::

        --lr_scheduler moslim_pl.modules.optim.WarmupDecayLR --lr_scheduler.warmup_steps 10
        --lr_scheduler.total_steps 1200 --lr_scheduler.decay cosine

    Args:
        optimizer: the optimizer (LightningCLI passes it).
        warmup_steps: steps of the linear warm-up: step ``s < warmup_steps`` runs at ``(s + 1) /
            (warmup_steps + 1)`` of the peak.
        total_steps: the step at which the decay ends (needed by ``linear`` and ``cosine``; usually
            ``trainer.max_steps``); later steps stay at the floor.
        decay: ``constant``, ``linear`` or ``cosine``.
        min_lr_ratio: the floor, as a fraction of the peak learning rate.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        decay: str = "constant",
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if decay not in DECAYS:
            raise MoslimError(f"WarmupDecayLR: unknown decay {decay!r}; expected one of {', '.join(DECAYS)}")
        if decay != "constant" and (total_steps is None or total_steps <= warmup_steps):
            raise MoslimError(
                f"WarmupDecayLR: decay {decay!r} needs total_steps > warmup_steps, got {total_steps}, {warmup_steps}"
            )
        if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise MoslimError(
                f"WarmupDecayLR: need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got {warmup_steps}, {min_lr_ratio}"
            )
        self.warmup_steps, self.total_steps, self.decay, self.min_lr_ratio = (
            int(warmup_steps),
            total_steps,
            decay,
            float(min_lr_ratio),
        )
        super().__init__(optimizer, self.factor, last_epoch)

    def factor(self, step: int) -> float:
        """The learning rate at optimizer step ``step``, as a fraction of the peak."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        shape = 1.0 - progress if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


def grad_norm(parameters: Iterable[nn.Parameter]) -> Tensor | None:
    """The L2 norm over every gradient (this rank's shards under FSDP2), in float32; ``None`` without any."""
    norms = []
    for param in parameters:
        grad = param.grad
        if grad is None:
            continue
        if hasattr(grad, "to_local"):  # a DTensor: the local shard, no collective
            grad = grad.to_local()
        norms.append(torch.linalg.vector_norm(grad.detach().float()))
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else None


def log_optimizer_step(module: Any, optimizer: torch.optim.Optimizer) -> None:
    """Log ``train/lr`` (the first parameter group's rate) and ``train/grad_norm`` (before clipping).

    Reads the gradients only: the step's math and the RNG are untouched.
    """
    module.log("train/lr", float(optimizer.param_groups[0]["lr"]), on_step=True, on_epoch=False)
    norm = grad_norm(p for group in optimizer.param_groups for p in group["params"])
    if norm is not None:
        module.log("train/grad_norm", norm, on_step=True, on_epoch=False)


class OptimizerLogging:
    """LightningModule mixin: ``train/lr`` and ``train/grad_norm`` at every optimizer step of automatic
    optimization (Lightning calls the hook before it clips), and ``train/tokens_per_s`` and
    ``train/samples_per_s`` (a ``ThroughputCallback``). The RL stages log them themselves."""

    def configure_callbacks(self) -> list[Any]:
        return [ThroughputCallback()]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.automatic_optimization:
            log_optimizer_step(self, optimizer)


class ManualOptimization:
    """Optimizer steps of a LightningModule that optimizes manually (the RL stages), with the trainer's
    ``accumulate_grad_batches`` and ``gradient_clip_val`` applied by the module itself.

    The host class calls :meth:`_take_over_trainer_knobs` from ``configure_callbacks`` when fitting, and
    provides ``optim.max_grad_norm`` (``moslim_pl.modules.settings.OptimConfig``) and ``_step_metrics_read``
    (whether this step's metrics are read). A training step calls :meth:`_next_window` once, then
    :meth:`_backward_and_step` for each update it takes.
    """

    _accumulate = 1  # micro-batches (rollouts) per optimizer step; the trainer's accumulate_grad_batches
    _micro_batches = 0  # training batches seen, for the accumulation window (kept in checkpoints)
    _clip: tuple[float, str] | None = None  # the trainer's gradient_clip_val and algorithm, when set

    def _check_accumulation(self, accumulate: int) -> None:
        """Refuse ``accumulate_grad_batches`` where a stage cannot accumulate (overridden by stages)."""

    def _take_over_trainer_knobs(self) -> None:
        """Lightning refuses ``accumulate_grad_batches`` and ``gradient_clip_val`` for manual optimization;
        these modules apply them themselves (``docs/user_guide.md``, "Lightning's own knobs"): the
        trainer's values move here and the trainer's are reset, so Lightning's check passes."""
        trainer = self.trainer
        accumulate = int(trainer.accumulate_grad_batches)
        if accumulate != 1:
            self._check_accumulation(accumulate)
            self._accumulate = accumulate
            trainer.accumulate_grad_batches = 1
        clip = trainer.gradient_clip_val
        if clip is not None and clip > 0:
            algorithm = str(getattr(trainer.gradient_clip_algorithm, "value", None) or "norm")
            self._clip = (float(clip), algorithm)
            trainer.gradient_clip_val = None
            log.info(
                "gradient clipping by %s at %s (the trainer's gradient_clip_val, instead of optim.max_grad_norm=%s)",
                algorithm,
                clip,
                self.optim.max_grad_norm,
            )

    def _window(self) -> tuple[bool, bool]:
        """``(first, last)``: whether this training batch opens an accumulation window (zero the
        gradients) and whether it closes one (clip and step). Both are True without accumulation."""
        position = self._micro_batches % self._accumulate
        return position == 0, position == self._accumulate - 1

    def _next_window(self) -> tuple[bool, bool]:
        """This training batch's :meth:`_window`, counted: call it once per training batch."""
        window = self._window()
        self._micro_batches += 1
        return window

    def _backward_and_step(self, loss: Tensor | None, window: tuple[bool, bool]) -> None:
        """One update: zero the gradients where ``window`` opens an accumulation window, back-propagate
        ``loss`` (:meth:`_accumulated`), and where the window closes clip and step (:meth:`_clip_and_step`).

        ``loss=None``: nothing to back-propagate (Online-DPO's batch without a valid pair on any rank); the
        optimizer and the schedule still step, so that ``global_step`` counts training steps.
        """
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        first, last = window
        if first:  # grads to None: a step without a backward pass leaves the parameters as they are
            optimizer.zero_grad()
        if loss is not None:
            self.manual_backward(self._accumulated(loss))
        if not last:
            return
        if loss is not None or self._accumulate > 1:
            self._clip_and_step(optimizer, scheduler)
        else:  # no gradient to clip
            optimizer.step()
            self._step_schedule(scheduler)

    def _accumulated(self, loss: Tensor) -> Tensor:
        """The loss to back-propagate: ``loss / accumulate_grad_batches`` (the loss itself without)."""
        return loss if self._accumulate == 1 else loss / self._accumulate

    def _clip_and_step(self, optimizer: Any, scheduler: Any) -> None:
        """Clip the gradients (the trainer's ``gradient_clip_val`` if set, else ``max_grad_norm``), take the
        optimizer step and advance the learning-rate schedule (when there is one)."""
        if self._step_metrics_read:
            log_optimizer_step(self, optimizer)  # lr and the gradient norm before clipping
        if self._clip is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self._clip[0], gradient_clip_algorithm=self._clip[1]
            )
        elif self.optim.max_grad_norm is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.optim.max_grad_norm, gradient_clip_algorithm="norm"
            )
        optimizer.step()
        self._step_schedule(scheduler)

    @staticmethod
    def _step_schedule(scheduler: Any) -> None:
        """Advance the learning-rate schedule by one optimizer step (``ReduceLROnPlateau`` steps per epoch,
        on its metric: Lightning does that)."""
        if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
