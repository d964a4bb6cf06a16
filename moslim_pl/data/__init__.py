"""Datamodules, sources and schemas, the synthetic world and collation."""

from moslim_pl.data.preference import PreferenceDataModule
from moslim_pl.data.sources import DataError, DataSource, SyntheticConfig

__all__ = ["DataError", "DataSource", "PreferenceDataModule", "SyntheticConfig"]

from moslim_pl.data.prompts import PrefixSampler, PromptDataModule  # noqa: E402
from moslim_pl.data.sft import SFTDataModule  # noqa: E402

__all__ += ["PrefixSampler", "PromptDataModule", "SFTDataModule"]
