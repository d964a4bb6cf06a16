"""Hyperparameters that are dataclasses (``LoRAConfig``, ``DataSource``...) in and out of checkpoints."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def as_dataclass(cls: type[T], value: T | dict[str, Any] | None) -> T | None:
    """``value`` itself, or ``cls(**value)`` for the plain dict that a checkpoint's hyperparameters hold."""
    return cls(**value) if isinstance(value, dict) else value


def plain_hparams(hparams: MutableMapping[str, Any], keys: Sequence[str]) -> None:
    """Store dataclass hyperparameters as plain dicts, so checkpoints load with ``weights_only=True``."""
    for key in keys:
        value = hparams.get(key)
        if is_dataclass(value):
            hparams[key] = asdict(value)
        elif isinstance(value, list | tuple):
            hparams[key] = [asdict(item) if is_dataclass(item) else item for item in value]
