"""Lightning callbacks: running reward statistics and export."""

from moslim_pl.callbacks.export import ExportCallback
from moslim_pl.callbacks.stats import RewardStatsCallback

__all__ = ["ExportCallback", "RewardStatsCallback"]
