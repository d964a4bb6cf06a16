"""Metric sums stay float32 when a half-precision plugin casts the whole module."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric, SumMetric

from moslim_pl.modules.metric_hooks import float32_metrics


def test_float32_metrics_undoes_a_bf16_cast() -> None:
    module = nn.Module()
    module.total = SumMetric()
    module.mean = MeanMetric()
    module.to(torch.bfloat16)
    module.total.set_dtype(torch.bfloat16)  # what Lightning's bf16-true plugin leaves behind
    for _ in range(300):
        module.total.update(torch.tensor(1.0))
    assert module.total.compute().item() != 300  # a bf16 sum stops counting at 256
    float32_metrics(module)
    module.total.reset()
    for _ in range(300):
        module.total.update(torch.tensor(1.0))
    assert module.total.compute().dtype == torch.float32 and module.total.compute().item() == 300
    assert module.mean.mean_value.dtype == torch.float32
