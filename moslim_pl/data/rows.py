"""Row types and row checks of the data layer: what a source is, what a validated preference row is, and
the one-line ``DataError`` every bad cell becomes. Imports nothing of the data layer but messages.

:mod:`moslim_pl.data.sources` (reading) and :mod:`moslim_pl.data.schemas` (dataset converters) both build on
this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from moslim_pl.data.messages import Messages
from moslim_pl.data.types import IGNORE_LABEL
from moslim_pl.errors import MoslimError
from moslim_pl.schema import Dimension

SYNTHETIC = "synthetic"
_MISSING_STRINGS = frozenset({"", "n/a", "na", "nan", "none", "null"})


class DataError(MoslimError):
    """A source cannot be loaded or one of its rows does not fit the schema (always one line)."""


@dataclass
class DataSource:
    """Arguments of ``datasets.load_dataset``, plus the embedded synthetic world.

    Args:
        path: ``"synthetic"`` (the embedded world), a builder (``"json"``, ``"csv"``, ``"parquet"``) used
            with ``data_files``, a single local data file, a local folder or a hub id.
        name: the dataset configuration name.
        data_dir: a folder inside the dataset (``load_dataset``'s ``data_dir``; e.g. ``harmless-base``
            of ``Anthropic/hh-rlhf``).
        data_files: file(s) for a builder path.
        split: the split to read.
        revision: git revision of a hub dataset.
        max_rows: keep only the first ``max_rows`` rows.
        schema: read the rows with a dataset schema's converter (``helpsteer``, ``helpsteer2``,
            ``ultrafeedback``, ``pku_saferlhf``, ``hh_rlhf``; see ``moslim_pl.data.schemas``) instead of
            detecting the row kind from the columns. Only the reward model's datamodule reads schemas.
        schema_options: keyword options of the schema's converter (e.g. ``{dimension: harmlessness}``
            for ``hh_rlhf``).
    """

    path: str = SYNTHETIC
    name: str | None = None
    data_dir: str | None = None
    data_files: str | list[str] | None = None
    split: str = "train"
    revision: str | None = None
    max_rows: int | None = None
    schema: str | None = None
    schema_options: dict[str, Any] | None = None

    @property
    def is_synthetic(self) -> bool:
        return self.path == SYNTHETIC

    def describe(self) -> str:
        """Short name for messages, e.g. ``json:data.jsonl`` or ``nvidia/HelpSteer[validation]``."""
        text = self.path if self.name is None else f"{self.path}/{self.name}"
        if self.data_dir is not None:
            text += f"/{self.data_dir}"
        if self.data_files:
            files = [self.data_files] if isinstance(self.data_files, str) else list(self.data_files)
            text += ":" + files[0] + (f" (+{len(files) - 1} more)" if len(files) > 1 else "")
        if self.split != "train":
            text += f"[{self.split}]"
        return text


@dataclass
class SyntheticConfig:
    """Size and noise of the embedded synthetic preference world (see ``moslim_pl.data.synthetic``)."""

    num_prompts: int = 300
    responses_per_prompt: int = 4
    seed: int = 0
    label_noise: float = 0.0
    repeat_rate: float = 0.0
    """Share of responses that repeat some of their topic keywords (same oracle levels)."""


class PreferenceRow(NamedTuple):
    """One validated row: a prompt, one (pointwise) or two (chosen, rejected) responses and their classes."""

    prompt: str | Messages
    """Text, or a conversation ending with the user turn the responses answer."""
    responses: tuple[str, ...]
    labels: tuple[tuple[int, ...], ...]
    """[len(responses)][K] class index per head, or ``IGNORE_LABEL``."""
    pair_dim: int | None
    """Head judging the pair, ``ALL_HEADS``, or ``None`` for a pointwise row."""
    margin: float = 0.0
    """How far the chosen response's score should exceed the rejected one's (pairs; TRL's ``margin``)."""


@dataclass(frozen=True)
class Columns:
    """Column names of the two row kinds (the datamodule's ``*_column`` arguments)."""

    prompt: str = "prompt"
    response: str = "response"
    chosen: str = "chosen"
    rejected: str = "rejected"
    pair_dimension: str | None = None
    margin: str = "margin"


def parse_label(value: Any) -> int | None:
    """Integer label of a raw cell, ``None`` when missing; raises ``ValueError`` if not an integer.

    Ints, integral floats (``3.0``, what csv and pandas produce) and integral strings (``"3"``) are
    accepted; ``None``, NaN and ``"N/A"``-like strings mean missing.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = value
    if isinstance(value, str):
        if value.strip().lower() in _MISSING_STRINGS:
            return None
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"label {value!r} is not an integer") from None
    if isinstance(number, float):
        if math.isnan(number):
            return None
        if number.is_integer():
            return int(number)
    raise ValueError(f"label {value!r} is not an integer")


def cell_where(description: str, row: int, column: str) -> str:
    """``<description> row <row>, column <column>``: where a cell is, for messages."""
    return f"{description} row {row}, column {column!r}"


def check_text(value: Any, where: str) -> str:
    """``value`` if it is non-empty text, else a one-line ``DataError`` at ``where``."""
    if not isinstance(value, str):
        kind = "missing" if value is None else f"not text ({type(value).__name__})"
        raise DataError(f"{where}: {kind}")
    if not value.strip():
        raise DataError(f"{where}: empty text")
    return value


def check_label(dim: Dimension, value: Any, where: str) -> int:
    """Class index of a raw label cell for ``dim`` (``IGNORE_LABEL`` when missing); bad ones raise ``DataError``."""
    try:
        raw = parse_label(value)
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None
    if raw is None:
        return IGNORE_LABEL
    if not dim.low <= raw <= dim.high:
        raise DataError(f"{where}: label {raw} outside {dim.low}..{dim.high}")
    return dim.label_to_class(raw)
