"""Figures for TensorBoard and reports (matplotlib, headless)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on training nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

from moslim_pl.schema import Dimension  # noqa: E402


def figure_to_array(fig: plt.Figure) -> np.ndarray:
    """Render a figure to an [H, W, 3] uint8 array and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    image = plt.imread(buffer, format="png")
    return (image[..., :3] * 255).astype(np.uint8)


def confusion_matrix_image(matrix: Tensor, dimension: Dimension) -> np.ndarray:
    """A confusion matrix (rows: true level, columns: predicted level) as an [H, W, 3] uint8 image."""
    counts = matrix.detach().cpu().numpy()
    levels = list(range(dimension.min_level, dimension.max_level + 1))
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(levels), 1.0 + 0.6 * len(levels)))
    ax.imshow(counts, cmap="Blues")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_yticks(range(len(levels)), levels)
    ax.set_xlabel("predicted level")
    ax.set_ylabel("true level")
    ax.set_title(dimension.name)
    return figure_to_array(fig)
