"""Figures, images and text tables to whichever Lightning loggers can take them (``docs/user_guide.md``, "Logs").

One dispatch for every stage: TensorBoard (``add_figure``, ``add_image``, ``add_text``), Weights & Biases
(``log_image``, ``log_table``) and MLflow (``log_figure``, ``log_image``, ``log_text`` as run artifacts
named ``<tag>/step_<N>.png|md``). A logger that takes none of them (``CSVLogger``...) gets its scalars
only, and the run says so once per logger (a ``log.warning``). Call from rank 0; every function is a
no-op without loggers.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger

log = logging.getLogger(__name__)

_NOTED = "_moslim_media_noted"  # set on a logger once the run has said it takes no media


def _kind(logger: Logger) -> str | None:
    """``tensorboard``, ``wandb``, ``mlflow``, or ``None`` for a logger that takes no media."""
    if isinstance(logger, WandbLogger):
        return "wandb"
    if isinstance(logger, MLFlowLogger):
        return "mlflow"
    # TensorBoardLogger and anything else whose experiment is a SummaryWriter
    if hasattr(getattr(logger, "experiment", None), "add_figure"):
        return "tensorboard"
    return None


def _note_once(logger: Logger, what: str) -> None:
    if getattr(logger, _NOTED, False):
        return
    setattr(logger, _NOTED, True)
    log.warning(
        "%s takes scalars only: %s and other figures and text samples are not logged to it "
        "(TensorBoard, W&B and MLflow take them; docs/user_guide.md, 'Logs')",
        type(logger).__name__,
        what,
    )


def _supported(loggers: Iterable[Logger], tag: str) -> list[tuple[str, Logger]]:
    out = []
    for logger in loggers:
        kind = _kind(logger)
        if kind is None:
            _note_once(logger, tag)
        else:
            out.append((kind, logger))
    return out


def _artifact(tag: str, step: int, suffix: str) -> str:
    return f"{tag}/step_{step}.{suffix}"


def log_figure(loggers: Iterable[Logger], tag: str, figure: Any, step: int) -> None:
    """A matplotlib figure; the caller closes it."""
    for kind, logger in _supported(loggers, tag):
        if kind == "tensorboard":
            logger.experiment.add_figure(tag, figure, step, close=False)
        elif kind == "wandb":
            logger.log_image(key=tag, images=[_figure_array(figure)], step=step)
        else:
            logger.experiment.log_figure(logger.run_id, figure, _artifact(tag, step, "png"))


def _figure_array(figure: Any) -> np.ndarray:
    """The figure as an ``[H, W, 3]`` uint8 array, left open (``plots.figure_to_array`` closes it)."""
    from moslim_pl.evaluation.plots import plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    buffer.seek(0)
    image = plt.imread(buffer, format="png")
    return (image[..., :3] * 255).astype(np.uint8)


def log_image(loggers: Iterable[Logger], tag: str, image: np.ndarray, step: int) -> None:
    """An ``[H, W, 3]`` uint8 image."""
    for kind, logger in _supported(loggers, tag):
        if kind == "tensorboard":
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif kind == "wandb":
            logger.log_image(key=tag, images=[image], step=step)
        else:
            logger.experiment.log_image(logger.run_id, image, _artifact(tag, step, "png"))


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (cells as given: escape ``|`` and newlines beforehand)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def log_table(
    loggers: Iterable[Logger],
    tag: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    step: int,
    markdown: str | None = None,
) -> None:
    """A text table: TensorBoard and MLflow get it as markdown (``markdown``, else
    :func:`markdown_table`), W&B as a table."""
    text = markdown if markdown is not None else markdown_table(columns, rows)
    for kind, logger in _supported(loggers, tag):
        if kind == "tensorboard":
            logger.experiment.add_text(tag, text, step)
        elif kind == "wandb":
            logger.log_table(key=tag, columns=list(columns), data=[list(row) for row in rows], step=step)
        else:
            logger.experiment.log_text(logger.run_id, text, _artifact(tag, step, "md"))
