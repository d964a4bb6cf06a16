"""ThroughputCallback: rates over the window between logging steps, no host read of device values."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from moslim_pl.callbacks.throughput import ThroughputCallback


class Module:
    def __init__(self) -> None:
        self.logged: dict[str, Any] = {}

    def log(self, name: str, value: Any, **kwargs: Any) -> None:
        self.logged[name] = value


def _trainer(log_now: bool) -> Any:
    return SimpleNamespace(loggers=[object()], _logger_connector=SimpleNamespace(should_update_logs=log_now))


def test_token_count_never_leaves_the_device() -> None:
    """A meta tensor has no values: any host read (``int``, ``item``, ``bool``: a device sync on a GPU)
    would raise. The rate stays a device tensor for the logger."""
    callback, module = ThroughputCallback(), Module()
    callback.on_train_start(_trainer(False), module)
    for step, log_now in enumerate((False, True)):
        batch = SimpleNamespace(attention_mask=torch.ones(4, 7, device="meta"))
        callback.on_train_batch_start(_trainer(log_now), module, batch, step)
        callback.on_train_batch_end(_trainer(log_now), module, None, batch, step)
    rate = module.logged["train/tokens_per_s"]
    assert isinstance(rate, torch.Tensor) and rate.device.type == "meta"
    assert module.logged["train/samples_per_s"] > 0  # 8 rows over the window, counted on the host


def test_rollout_counts_and_window_reset(monkeypatch) -> None:
    # the window opens at 10 and logs at 12; the next opens at 12, pauses 13-14 (validation), logs at 15
    clock = iter([10.0, 12.0, 13.0, 14.0, 15.0])
    monkeypatch.setattr("moslim_pl.callbacks.throughput.time.perf_counter", lambda: next(clock))
    module = Module()
    module.rollout_tokens, module.rollout_samples = 100, 10  # before fit (e.g. a sweep): not counted
    callback = ThroughputCallback()
    callback.on_train_start(_trainer(False), module)
    callback.on_train_batch_start(_trainer(True), module, ["p"], 0)
    module.rollout_tokens, module.rollout_samples = 160, 14
    callback.on_train_batch_end(_trainer(True), module, None, ["p"], 0)
    assert module.logged == {"train/tokens_per_s": 30.0, "train/samples_per_s": 2.0}
    callback.on_validation_start(_trainer(False), module)  # 13: paused ...
    callback.on_validation_end(_trainer(False), module)  # 14: ... one second left out
    callback.on_train_batch_start(_trainer(True), module, ["p"], 1)
    module.rollout_tokens, module.rollout_samples = 180, 16
    callback.on_train_batch_end(_trainer(True), module, None, ["p"], 1)
    assert module.logged == {"train/tokens_per_s": 10.0, "train/samples_per_s": 1.0}
