"""RNGStateCallback: the Python, NumPy and torch (CPU and CUDA) RNG states travel with checkpoints.

Lightning saves no RNG state, so a run resumed from a checkpoint samples (rollouts, dropout) from a
different stream than the run it continues. This callback keeps one rule in every run: the RNG state at
the start of training step ``k + 1`` is the state at the end of step ``k``. Whatever happens in between
(validation rollouts, a new epoch's dataloader iterator, a resume's setup) draws nothing that training
sees. The end-of-step state is what a checkpoint saves; a resumed run installs it before its first step.

Every rank has its own streams (they sample different rollouts), so a checkpoint carries one state per
rank, gathered when it is written; a run resumed on the same number of ranks installs each rank's own.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from moslim_pl.utils.distributed import rank_and_world


def _numpy_state() -> tuple[str, torch.Tensor, int, int, float]:
    # a tensor, not an ndarray, so that checkpoints load with torch.load(weights_only=True)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)


def get_rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch CPU and (when initialised) CUDA RNG states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Installs a state from :func:`get_rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``state``, in rank order (a collective when the run is distributed)."""
    _, world = rank_and_world()
    if world == 1:
        return [state]
    states: list[Any] = [None] * world
    torch.distributed.all_gather_object(states, state)
    return states


class RNGStateCallback(Callback):
    """Saves the RNG states at the end of each training step; restores them before the next step.

    The checkpoint holds ``{"rng": [state of rank 0, state of rank 1, ...]}``. Resuming on another number of
    ranks installs rank 0's state on rank 0 only and leaves the other ranks seeded as they start (with a
    warning): the run goes on, but not exactly as it would have.
    """

    def __init__(self) -> None:
        self._state: dict[str, Any] | None = None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._state is not None:
            set_rng_state(self._state)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._state = get_rng_state()

    def state_dict(self) -> dict[str, Any]:
        # every rank builds the checkpoint dict (only rank 0 writes it), so the gather is matched
        return {} if self._state is None else {"rng": _gather(self._state)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("rng")
        if isinstance(states, dict):  # written by a version that saved rank 0's state only
            states = [states]
        if not states:
            self._state = None
            return
        rank, world = rank_and_world()
        if len(states) == world:
            self._state = states[rank]
            return
        rank_zero_warn(
            f"RNGStateCallback: the checkpoint holds RNG states of {len(states)} rank(s), this run has "
            f"{world}; only rank 0's state is restored, so the resumed run is not an exact continuation"
        )
        self._state = states[0] if rank == 0 else None
