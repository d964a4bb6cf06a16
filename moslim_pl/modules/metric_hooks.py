"""Evaluation hooks of the modules that keep torchmetrics (`MetricEvalHooks`), and the float32 fix they apply:
metric sums stay float32 under ``bf16-true``/``16-true``, which cast the whole LightningModule.

Lightning's half-precision plugins call ``module.to(dtype)``, and torchmetrics lets that cast the floating
states of its metrics: a bf16 sum stops counting at 256 rows and rounds every mean. The modules call
:func:`float32_metrics` when an evaluation starts (after the cast) to undo it for their metrics.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric


def float32_metrics(module: nn.Module) -> None:
    """Give every metric inside ``module`` whose states are all floating float32 states (in place)."""
    for metric in module.modules():
        if not isinstance(metric, Metric):
            continue
        states = [getattr(metric, name) for name in metric._defaults]
        tensors = [s for s in states if isinstance(s, torch.Tensor)]
        if (
            tensors
            and all(t.is_floating_point() for t in tensors)
            and any(t.dtype != torch.float32 for t in tensors)
        ):
            metric.set_dtype(torch.float32)


class MetricEvalHooks:
    """Lightning evaluation hooks of a module that keeps torchmetrics and reports them per stage.

    Before validation and test the metrics are made float32 again (see :func:`float32_metrics`); at the
    end of each epoch ``self._eval_epoch_end("val" | "test")`` logs and resets them.
    """

    def _eval_epoch_end(self, stage: str) -> None:
        raise NotImplementedError

    def on_validation_start(self) -> None:
        float32_metrics(self)

    def on_test_start(self) -> None:
        float32_metrics(self)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
