"""Shared fixtures: paths, the quickstart config and TensorBoard readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from moslim_pl.evaluation import tensorboard

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
QUICKSTART = ROOT / "configs" / "reward_model" / "quickstart.yaml"


@pytest.fixture
def helpsteer_sample() -> Path:
    path = SHARED_DATA / "helpsteer_sample.jsonl"
    if not path.exists():
        pytest.skip("../shared/data/helpsteer_sample.jsonl is not on this machine")
    return path


@pytest.fixture
def read_scalars():
    return tensorboard.read_scalars


@pytest.fixture
def read_image_tags():
    return tensorboard.read_image_tags


@pytest.fixture
def quickstart_config() -> Path:
    return QUICKSTART
