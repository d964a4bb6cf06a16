"""Shared fixtures: paths, the quickstart config and TensorBoard readers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moslim_pl.evaluation import tensorboard

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
QUICKSTART = ROOT / "configs" / "reward_model" / "quickstart.yaml"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests run tiny models, fastest on one thread; on a busy 2-core machine two threads spin ~100x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
