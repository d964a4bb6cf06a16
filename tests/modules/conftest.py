"""Fixtures of the RL module tests: prompts, a trainer, TensorBoard reading (hand-built RM: ../conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moslim_pl.data.synthetic import generate_prompts


def _prompts(level: int, count: int, seed: int) -> list[str]:
    return [f"<formality {level}> {p}" for p in generate_prompts(count, seed=seed)]


def _tensorboard(log_dir: Path) -> tuple[dict[str, list[float]], list[str]]:
    scalars: dict[str, list[float]] = {}
    texts: list[str] = []
    for file in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0, "tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
        texts.extend(accumulator.Tags()["tensors"])
    return scalars, texts


def _trainer(max_steps: int, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.fixture
def formality_prompts():
    """``(level, count, seed) -> prompts`` carrying ``<formality level>``."""
    return _prompts


@pytest.fixture
def read_logs():
    """``log_dir -> (scalars, text tags)`` from TensorBoard event files."""
    return _tensorboard


@pytest.fixture
def rl_trainer():
    """``(max_steps, **kwargs) -> Trainer`` on the CPU without checkpoints or progress bars."""
    return _trainer
