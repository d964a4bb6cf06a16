"""Lightning callbacks: running reward statistics, export, the controllability sweep, predictions."""

from moslim_pl.callbacks.controllability import ControllabilityCallback
from moslim_pl.callbacks.export import ExportCallback
from moslim_pl.callbacks.predictions import PredictionWriter
from moslim_pl.callbacks.stats import RewardStatsCallback

__all__ = ["ControllabilityCallback", "ExportCallback", "PredictionWriter", "RewardStatsCallback"]
