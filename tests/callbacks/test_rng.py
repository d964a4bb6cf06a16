"""RNGStateCallback: the RNG states survive a checkpoint round trip and are restored before each step."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from moslim_pl.callbacks import RNGStateCallback
from moslim_pl.callbacks.rng import get_rng_state, set_rng_state


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_state_round_trip_through_a_weights_only_checkpoint() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    saver = RNGStateCallback()
    saver.on_train_batch_end(None, None, None, None, 0)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    torch.save({"callbacks": {"RNGStateCallback": saver.state_dict()}}, buffer)
    expected = _draw()

    random.seed(10)
    np.random.seed(20)
    torch.manual_seed(30)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    restorer = RNGStateCallback()
    restorer.load_state_dict(loaded["callbacks"]["RNGStateCallback"])
    restorer.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]
    assert _draw() == expected


def test_draws_between_steps_do_not_reach_training() -> None:
    torch.manual_seed(0)
    callback = RNGStateCallback()
    callback.on_train_batch_end(None, None, None, None, 0)  # type: ignore[arg-type]
    expected = _draw()
    callback.on_train_batch_start(None, None, None, 1)  # type: ignore[arg-type]
    assert _draw() == expected  # the draws after the step end (e.g. validation) are undone
    torch.rand(5)
    callback.on_train_batch_start(None, None, None, 1)  # type: ignore[arg-type]
    assert _draw() == expected


def test_empty_state_changes_nothing() -> None:
    callback = RNGStateCallback()
    assert callback.state_dict() == {}
    callback.load_state_dict({})
    torch.manual_seed(5)
    state = get_rng_state()
    callback.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]
    set_rng_state(state)
    assert torch.equal(torch.get_rng_state(), state["torch"])


def _state_after(seed: int) -> dict:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return get_rng_state()


def test_each_rank_restores_its_own_state(monkeypatch) -> None:
    states = [_state_after(1), _state_after(2)]
    for rank in (0, 1):
        monkeypatch.setattr("moslim_pl.callbacks.rng.rank_and_world", lambda rank=rank: (rank, 2))
        callback = RNGStateCallback()
        callback.load_state_dict({"rng": states})
        callback.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]
        assert torch.equal(torch.get_rng_state(), states[rank]["torch"])


def test_another_world_size_restores_rank_zero_only_and_warns(monkeypatch) -> None:
    states = [_state_after(1), _state_after(2)]
    monkeypatch.setattr("moslim_pl.callbacks.rng.rank_and_world", lambda: (1, 4))
    callback = RNGStateCallback()
    with pytest.warns(UserWarning, match="RNG states of 2 rank"):
        callback.load_state_dict({"rng": states})
    assert callback.state_dict() == {}  # rank 1 keeps its own seeding
    monkeypatch.setattr("moslim_pl.callbacks.rng.rank_and_world", lambda: (0, 4))
    callback.load_state_dict({"rng": states})
    callback.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), states[0]["torch"])


def test_a_single_state_of_an_older_checkpoint_still_loads() -> None:
    state = _state_after(3)
    callback = RNGStateCallback()
    callback.load_state_dict({"rng": state})
    torch.manual_seed(0)
    callback.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), state["torch"])
