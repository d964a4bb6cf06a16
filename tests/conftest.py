"""Shared fixtures: paths, the quickstart config and a TensorBoard reader."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
QUICKSTART = ROOT / "configs" / "reward_model" / "quickstart.yaml"


def _read_scalars(log_dir: Path) -> dict[str, list[float]]:
    """Every scalar series in the TensorBoard event files under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard events under {log_dir}"
    series: dict[str, list[float]] = {}
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return series


def _read_image_tags(log_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: list[str] = []
    for file in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(file), size_guidance={"images": 0})
        accumulator.Reload()
        tags += accumulator.Tags()["images"]
    return tags


@pytest.fixture
def helpsteer_sample() -> Path:
    path = SHARED_DATA / "helpsteer_sample.jsonl"
    if not path.exists():
        pytest.skip("../shared/data/helpsteer_sample.jsonl is not on this machine")
    return path


@pytest.fixture
def read_scalars():
    return _read_scalars


@pytest.fixture
def read_image_tags():
    return _read_image_tags


@pytest.fixture
def quickstart_config() -> Path:
    return QUICKSTART
