"""Datamodules, sources and schemas, the synthetic world and collation.

The datamodules (Lightning, tokenizers) are imported on first use (``moslim_pl.data.PromptDataModule``),
so that the plain modules below them (rows, messages, the synthetic world) import without them.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DataError": "moslim_pl.data.rows",
    "DataSource": "moslim_pl.data.rows",
    "SyntheticConfig": "moslim_pl.data.rows",
    "PreferenceDataModule": "moslim_pl.data.preference",
    "PrefixSampler": "moslim_pl.data.prompts",
    "PromptDataModule": "moslim_pl.data.prompts",
    "SFTDataModule": "moslim_pl.data.sft",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'moslim_pl.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
