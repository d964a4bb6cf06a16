"""How a dataset schema is declared: the ``register`` decorator, the registry ``SCHEMAS``, ``Heads`` (what a
converter sees of the reward model) and ``convert_source``. The schemas themselves are in
:mod:`moslim_pl.data.schemas`, which registers them when imported.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets

from moslim_pl.data.rows import DataError, DataSource, PreferenceRow, check_label, check_text
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.schema import Dimension

log = logging.getLogger(__name__)


class Heads:
    """The reward model's heads as a converter sees them, plus the source's name for messages.

    Args:
        dimensions: the reward model's dimensions (one per head).
        description: the source's name in messages (``DataSource.describe()``).
    """

    def __init__(self, dimensions: Sequence[Dimension], description: str) -> None:
        self.dimensions = tuple(dimensions)
        self.description = description
        self._heads: dict[str, list[int]] = {}
        for k, dim in enumerate(self.dimensions):
            self._heads.setdefault(dim.source_column, []).append(k)
        self.skipped: Counter[str] = Counter()
        """reason -> number of input rows (or completions) skipped for it."""

    def where(self, row: int, column: str) -> str:
        return f"{self.description} row {row}, column {column!r}"

    def error(self, row: int, column: str, problem: str) -> DataError:
        return DataError(f"{self.where(row, column)}: {problem}")

    def text(self, value: Any, row: int, column: str) -> str:
        return check_text(value, self.where(row, column))

    def response(self, value: Any, row: int, column: str) -> str | None:
        """A response's text, or ``None`` (counted as skipped) when it is empty."""
        if isinstance(value, str) and not value.strip():
            self.skipped["empty response"] += 1
            return None
        return self.text(value, row, column)

    def labels(self, row: int, values: Mapping[str, tuple[Any, str]]) -> tuple[int, ...]:
        """Class index per head from ``{dimension name: (raw label, column it came from)}``."""
        labels = [IGNORE_LABEL] * len(self.dimensions)
        for name, (value, column) in values.items():
            for k in self._heads.get(name, ()):
                labels[k] = check_label(self.dimensions[k], value, self.where(row, column))
        return tuple(labels)

    def pair(self, prompt: str, chosen: str, rejected: str, dimension: str | None) -> PreferenceRow | None:
        """A pairwise row judged on ``dimension`` (``None``: every head); ``None`` if no head judges it."""
        if dimension is None:
            pair_dim = ALL_HEADS
        elif dimension in self._heads:
            pair_dim = self._heads[dimension][0]
        else:
            self.skipped[f"pair judged on {dimension!r}, which has no head"] += 1
            return None
        unlabelled = (IGNORE_LABEL,) * len(self.dimensions)
        return PreferenceRow(prompt, (chosen, rejected), (unlabelled, unlabelled), pair_dim)


Converter = Callable[..., list[PreferenceRow]]
"""``convert(dataset, heads, **options) -> rows``; options are keyword-only parameters."""


@dataclass(frozen=True)
class Schema:
    """A registered converter and the dimensions its rows label."""

    name: str
    convert: Converter
    dimensions: tuple[Dimension, ...]
    declare: Callable[[Mapping[str, Any]], tuple[Dimension, ...]] | None = None
    """The dimensions as a function of the source's ``schema_options`` (else ``dimensions``)."""

    def dimensions_for(self, options: Mapping[str, Any] | None) -> tuple[Dimension, ...]:
        """The dimensions a source with these ``schema_options`` labels or judges."""
        return self.declare(options or {}) if self.declare is not None else self.dimensions

    @property
    def options(self) -> tuple[str, ...]:
        parameters = inspect.signature(self.convert).parameters.values()
        return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


SCHEMAS: dict[str, Schema] = {}


def register(
    *names: str,
    dimensions: Sequence[Dimension] = (),
    declare: Callable[[Mapping[str, Any]], tuple[Dimension, ...]] | None = None,
) -> Callable[[Converter], Converter]:
    """Register a converter under one or more schema names (``declare``: dimensions from the options)."""

    def decorate(convert: Converter) -> Converter:
        for name in names:
            SCHEMAS[name] = Schema(name, convert, tuple(dimensions), declare)
        return convert

    return decorate


def get_schema(source: DataSource) -> Schema:
    """The schema a source names; an unknown name is a one-line ``DataError``."""
    if source.schema not in SCHEMAS:
        known = ", ".join(sorted(SCHEMAS))
        raise DataError(f"{source.describe()}: unknown schema {source.schema!r} (known: {known})")
    if source.is_synthetic:
        raise DataError(f"{source.describe()}: the synthetic source takes no schema")
    return SCHEMAS[source.schema]


def convert_source(
    dataset: datasets.Dataset, source: DataSource, dimensions: Sequence[Dimension]
) -> list[PreferenceRow]:
    """Rows of ``dataset`` through ``source.schema``'s converter, labelled for ``dimensions``' heads."""
    schema = get_schema(source)
    description = source.describe()
    options = dict(source.schema_options or {})
    unknown = sorted(set(options) - set(schema.options))
    if unknown:
        accepted = ", ".join(schema.options) or "none"
        raise DataError(
            f"{description}: schema {schema.name!r} has no option {', '.join(unknown)} (options: {accepted})"
        )
    heads = Heads(dimensions, description)
    rows = schema.convert(dataset, heads, **options)
    for reason, count in heads.skipped.items():
        log.warning("%s: skipped %d item(s): %s", description, count, reason)
    if not rows:
        raise DataError(f"{description}: schema {schema.name!r} gave no rows for the reward model's heads")
    return rows


def read_columns(
    dataset: datasets.Dataset, heads: Heads, schema: str, required: Sequence[str]
) -> dict[str, list]:
    """The required columns, read at once (row-wise access to an Arrow table is slow)."""
    names = dataset.column_names
    for column in required:
        if column not in names:
            raise heads.error(
                0,
                column,
                f"missing (schema {schema!r} needs {', '.join(required)}; the source has {', '.join(names)})",
            )
    return dataset.select_columns(list(required)).to_dict()
