"""Where preference rows come from and how a raw row becomes a validated example.

A source is anything ``datasets.load_dataset`` reads (a hub id, a local folder, json/jsonl/csv/parquet
files) or the embedded synthetic world. Two row kinds are detected from the columns:

- **pointwise**: ``prompt``, ``response`` and one integer column per dimension. A row may lack some
  dimension columns or hold ``None``/``"N/A"`` there; that head then ignores the row.
- **pairwise**: ``prompt``, ``chosen``, ``rejected``; optionally a column naming the dimension the pair
  judges (else every head judges it), a ``margin`` column (TRL's) and per-response labels in
  ``<column>_chosen`` / ``<column>_rejected`` columns (UltraFeedback's ``score_chosen`` style). Without
  a ``prompt`` column the shared start of ``chosen`` and ``rejected`` is the prompt (TRL's
  implicit-prompt form).

Cells may hold text or conversations (TRL's conversational formats, ``moslim_pl.data.messages``): a
prompt as a list of ``{"role", "content"}`` messages, a response as one assistant message.

A source with a ``schema`` (HelpSteer, UltraFeedback, PKU-SafeRLHF, HH-RLHF) is instead read by that
dataset's converter in ``moslim_pl.data.schemas``.

Every problem a user can cause is a one-line ``DataError`` naming the source, the row and the column.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import datasets

from moslim_pl.data.messages import Messages, assistant_text, is_conversation, split_implicit, to_messages
from moslim_pl.data.rows import (
    SYNTHETIC,
    Columns,
    DataError,
    DataSource,
    PreferenceRow,
    SyntheticConfig,
    cell_where,
    check_label,
    check_text,
    parse_label,
)
from moslim_pl.data.schemas import get_schema
from moslim_pl.data.synthetic import DIMENSIONS, generate_rows
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.errors import MoslimError
from moslim_pl.schema import Dimension, check_dimensions

log = logging.getLogger(__name__)

# The row types and checks live in moslim_pl.data.rows; they are named here too, where a reader of sources
# looks for them (``from moslim_pl.data.sources import DataSource``).
__all__ = [
    "SYNTHETIC",
    "Columns",
    "DataError",
    "DataSource",
    "PreferenceRow",
    "SyntheticConfig",
    "check_label",
    "check_text",
    "load_source",
    "parse_label",
    "read_rows",
    "resolve_dimensions",
]


# datasets.load_dataset does not take a bare file as ``path``; users expect it to.
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_source(
    source: DataSource, synthetic: SyntheticConfig | None = None, trust_remote_code: bool = False
) -> datasets.Dataset:
    """Load ``source`` (cut to ``max_rows``); any failure becomes a one-line ``DataError``."""
    desc = source.describe()
    if source.max_rows is not None and source.max_rows < 1:
        raise DataError(f"{desc}: max_rows must be at least 1, got {source.max_rows}")
    if source.is_synthetic:
        cfg = synthetic or SyntheticConfig()
        rows = generate_rows(
            cfg.num_prompts, cfg.responses_per_prompt, cfg.seed, cfg.label_noise, repeat_rate=cfg.repeat_rate
        )
        dataset = datasets.Dataset.from_list(rows)
    else:
        path, data_files = source.path, source.data_files
        extension = os.path.splitext(path)[1].lower()
        if data_files is None and extension in _BUILDERS and os.path.isfile(path):
            path, data_files = _BUILDERS[extension], path
        for file in [data_files] if isinstance(data_files, str) else data_files or []:
            if isinstance(file, str) and os.path.isfile(file) and _is_blank(file):
                raise DataError(f"{desc}: data file {file!r} is empty (no rows)")
        kwargs: dict[str, Any] = {"name": source.name, "data_files": data_files, "split": source.split}
        if source.data_dir is not None:
            kwargs["data_dir"] = source.data_dir
        if source.revision is not None:
            kwargs["revision"] = source.revision
        if trust_remote_code:  # recent `datasets` reject the argument altogether, so only pass it on request
            kwargs["trust_remote_code"] = True
        try:
            dataset = datasets.load_dataset(path, **kwargs)
        except Exception as err:  # network, missing file, bad split, parse error: all become one line
            reason = " ".join(str(err).split()) or type(err).__name__
            raise DataError(f"cannot load {desc}: {type(err).__name__}: {reason[:300]}") from err
        if not isinstance(dataset, datasets.Dataset):
            raise DataError(f"cannot load {desc}: expected one split, got {type(dataset).__name__}")
    if source.max_rows is not None and len(dataset) > source.max_rows:
        dataset = dataset.select(range(source.max_rows))
    if len(dataset) == 0:
        raise DataError(f"{desc}: the source has no rows")
    return dataset


def _is_blank(file: str, chunk: int = 1 << 16) -> bool:
    """Whether a file holds only whitespace (``datasets`` fails on those with an obscure error)."""
    with open(file, "rb") as handle:
        while block := handle.read(chunk):
            if block.strip():
                return False
    return True


def read_rows(
    dataset: datasets.Dataset,
    dimensions: Sequence[Dimension],
    columns: Columns = Columns(),  # noqa: B008 -- frozen dataclass, safe as a default
    description: str = "source",
) -> list[PreferenceRow]:
    """Validate every row of ``dataset`` and turn its labels into class indices.

    The row kind is detected from the columns: ``columns.response`` present means pointwise, else
    ``columns.chosen`` and ``columns.rejected`` mean pairwise (with ``columns.prompt``, or without it:
    the implicit-prompt form). Text and conversational cells are both read (module docstring).
    """
    names = set(dataset.column_names)

    def fail(message: str) -> DataError:
        return DataError(f"{description}: {message}; columns are {', '.join(sorted(names))}")

    has_prompt = columns.prompt in names
    pair_column = margin_column = None
    if columns.response in names:
        if not has_prompt:
            raise fail(f"missing column {columns.prompt!r}")
        text_columns = [columns.response]
        label_columns = [[d.source_column for d in dimensions]]
        if not names.intersection(label_columns[0]):
            expected = ", ".join(repr(c) for c in label_columns[0])
            raise fail(f"no dimension column found (expected at least one of {expected})")
        for dim, column in zip(dimensions, label_columns[0], strict=True):
            if column not in names:
                log.warning(
                    "%s has no column %r: head %r ignores all its rows", description, column, dim.name
                )
    elif columns.chosen in names and columns.rejected in names:
        text_columns = [columns.chosen, columns.rejected]
        label_columns = [[f"{d.source_column}_{side}" for d in dimensions] for side in ("chosen", "rejected")]
        pair_column = columns.pair_dimension
        if pair_column is not None and pair_column not in names:
            raise fail(f"missing pair dimension column {pair_column!r}")
        margin_column = columns.margin if columns.margin in names else None
    else:
        missing = f"missing column {columns.response!r} (pointwise rows) or {columns.chosen!r} and "
        raise fail(missing + f"{columns.rejected!r} (pairwise rows)")

    wanted = [*([columns.prompt] if has_prompt else []), *text_columns]
    wanted += [c for cols in label_columns for c in cols if c in names]
    wanted += [c for c in (pair_column, margin_column) if c is not None]
    # One columnar read: row-wise access to an Arrow table is far slower.
    table = dataset.select_columns(list(dict.fromkeys(wanted))).to_dict()
    dim_index = {d.name: k for k, d in enumerate(dimensions)}

    rows = []
    for i in range(len(dataset)):
        row_where = f"{description} row {i}"
        try:
            prompt, texts = _prompt_and_texts(table, i, has_prompt, columns.prompt, text_columns, row_where)
        except MoslimError as err:
            raise DataError(str(err)) from None
        labels = tuple(
            tuple(
                check_label(dim, table[c][i], cell_where(description, i, c)) if c in table else IGNORE_LABEL
                for dim, c in zip(dimensions, cols, strict=True)
            )
            for cols in label_columns
        )
        pair_dim = None if len(texts) == 1 else ALL_HEADS
        if pair_column is not None:
            value = table[pair_column][i]
            name = "" if value is None else str(value).strip()
            if name and name not in dim_index:
                where = cell_where(description, i, pair_column)
                raise DataError(f"{where}: unknown dimension {value!r} (known: {', '.join(dim_index)})")
            if name:
                pair_dim = dim_index[name]
        margin = 0.0
        if margin_column is not None and table[margin_column][i] is not None:
            margin = _margin(table[margin_column][i], cell_where(description, i, margin_column))
        rows.append(PreferenceRow(prompt, texts, labels, pair_dim, margin))
    return rows


def _prompt_and_texts(
    table: dict[str, list], i: int, has_prompt: bool, prompt_column: str, text_columns: list[str], where: str
) -> tuple[str | Messages, tuple[str, ...]]:
    """A row's prompt (text or conversation) and its one or two response texts, validated."""
    if not has_prompt:  # implicit prompt: the shared start of chosen and rejected
        prompt, good, bad = split_implicit(table[text_columns[0]][i], table[text_columns[1]][i], where)
        return prompt, (good, bad)
    value = table[prompt_column][i]
    column_where = f"{where}, column {prompt_column!r}"
    if is_conversation(value):
        prompt = to_messages(value, column_where)
        if prompt[-1][0] != "user":
            raise MoslimError(
                f"{column_where}: the conversation must end with a user turn, not {prompt[-1][0]}"
            )
    else:
        prompt = check_text(value, column_where)
    texts = tuple(assistant_text(table[c][i], f"{where}, column {c!r}") for c in text_columns)
    if len(texts) == 2 and texts[0] == texts[1]:
        raise MoslimError(f"{where}: {text_columns[0]!r} and {text_columns[1]!r} are identical")
    return prompt, texts


def _margin(value: Any, where: str) -> float:
    try:
        margin = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: margin {value!r} is not a number") from None
    if not math.isfinite(margin):
        raise DataError(f"{where}: margin {value!r} is not finite")
    return margin


def resolve_dimensions(
    dimensions: Sequence[Dimension] | None, source: DataSource, *more: DataSource
) -> tuple[Dimension, ...]:
    """The configured schema, else the union of the sources' own dimensions (in source order).

    The synthetic world and every dataset schema (``DataSource.schema``) declare their dimensions;
    other sources need the config to declare them. Two sources giving one name different ranges
    cannot share a head: that is an error asking for ``dimensions``.
    """
    if dimensions is not None:
        return check_dimensions(dimensions)
    found: dict[str, tuple[Dimension, str]] = {}
    for src in (source, *more):
        if src.schema is not None:
            own = get_schema(src).dimensions_for(src.schema_options)
        elif src.is_synthetic:
            own = tuple(DIMENSIONS)
        else:
            raise MoslimError(
                f"source {src.describe()!r} needs `dimensions` (one Dimension per label column, the reward "
                "model's schema) or a `schema`; only the synthetic source and dataset schemas have defaults"
            )
        for dim in own:
            first, where = found.setdefault(dim.name, (dim, src.describe()))
            if first != dim:
                raise MoslimError(
                    f"dimension {dim.name!r} is {first.low}..{first.high} in {where} but {dim.low}..{dim.high} "
                    f"in {src.describe()}: declare `dimensions` to choose one head per name"
                )
    if not found:
        names = ", ".join(src.describe() for src in (source, *more))
        raise MoslimError(f"sources {names} label no dimension (pairwise only): declare `dimensions`")
    return check_dimensions([dim for dim, _ in found.values()])
