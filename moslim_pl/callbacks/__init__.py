"""Lightning callbacks: reward statistics, export, the controllability sweep, predictions, compute, RNG
state for exact resume, and the non-finite step guard."""

from moslim_pl.callbacks.compute import ComputeCallback
from moslim_pl.callbacks.controllability import ControllabilityCallback
from moslim_pl.callbacks.export import ExportCallback
from moslim_pl.callbacks.nonfinite import NonFiniteGuard
from moslim_pl.callbacks.predictions import PredictionWriter
from moslim_pl.callbacks.rng import RNGStateCallback
from moslim_pl.callbacks.stats import RewardStatsCallback

__all__ = [
    "ComputeCallback",
    "ControllabilityCallback",
    "ExportCallback",
    "NonFiniteGuard",
    "PredictionWriter",
    "RNGStateCallback",
    "RewardStatsCallback",
]
