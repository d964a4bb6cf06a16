"""Read scalars back from TensorBoard event files (for recipes, reports and tests).

``python -m moslim_pl.evaluation.tensorboard LOG_DIR [--prefix val/acc/]`` prints the last value of
every matching scalar as a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _accumulators(log_dir: str | Path, **size_guidance: int):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {str(log_dir)!r}")
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance=size_guidance)
        accumulator.Reload()
        yield accumulator


def read_scalars(log_dir: str | Path) -> dict[str, list[float]]:
    """Every scalar series under ``log_dir``, in logging order (all event files concatenated)."""
    series: dict[str, list[float]] = {}
    for accumulator in _accumulators(log_dir, scalars=0):
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return series


def read_scalar_steps(log_dir: str | Path) -> dict[str, list[int]]:
    """The steps at which every scalar under ``log_dir`` was written, sorted (a repeat shows twice)."""
    steps: dict[str, list[int]] = {}
    for accumulator in _accumulators(log_dir, scalars=0):
        for tag in accumulator.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(event.step for event in accumulator.Scalars(tag))
    return {tag: sorted(found) for tag, found in steps.items()}


def read_image_tags(log_dir: str | Path) -> list[str]:
    """The tags of every image logged under ``log_dir``."""
    return [tag for accumulator in _accumulators(log_dir, images=0) for tag in accumulator.Tags()["images"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir")
    parser.add_argument("--prefix", default="val/", help="only scalars whose tag starts with this")
    args = parser.parse_args(argv)
    scalars = {
        tag: values for tag, values in read_scalars(args.log_dir).items() if tag.startswith(args.prefix)
    }
    width = max((len(tag) for tag in scalars), default=10)
    sys.stdout.write(f"{'scalar':<{width}}  last\n")
    for tag in sorted(scalars):
        sys.stdout.write(f"{tag:<{width}}  {scalars[tag][-1]:.4f}\n")


if __name__ == "__main__":
    main()
