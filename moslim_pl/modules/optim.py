"""The optimizer every stage uses: AdamW without decay on biases and norms, linear warm-up then constant."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


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
