"""Datamodules, sources and schemas, the synthetic world and collation."""

from moslim_pl.data.preference import PreferenceDataModule
from moslim_pl.data.prompts import PrefixSampler, PromptDataModule
from moslim_pl.data.sft import SFTDataModule
from moslim_pl.data.sources import DataError, DataSource, SyntheticConfig

__all__ = [
    "DataError",
    "DataSource",
    "PreferenceDataModule",
    "PrefixSampler",
    "PromptDataModule",
    "SFTDataModule",
    "SyntheticConfig",
]
