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
from dataclasses import dataclass
from typing import Any, NamedTuple

import datasets

from moslim_pl.data.messages import Messages, assistant_text, is_conversation, split_implicit, to_messages
from moslim_pl.data.types import ALL_HEADS, IGNORE_LABEL
from moslim_pl.errors import MoslimError
from moslim_pl.schema import Dimension, check_dimensions

log = logging.getLogger(__name__)


SYNTHETIC = "synthetic"
_MISSING_STRINGS = frozenset({"", "n/a", "na", "nan", "none", "null"})
# datasets.load_dataset does not take a bare file as ``path``; users expect it to.
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


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


def load_source(
    source: DataSource, synthetic: SyntheticConfig | None = None, trust_remote_code: bool = False
) -> datasets.Dataset:
    """Load ``source`` (cut to ``max_rows``); any failure becomes a one-line ``DataError``."""
    desc = source.describe()
    if source.max_rows is not None and source.max_rows < 1:
        raise DataError(f"{desc}: max_rows must be at least 1, got {source.max_rows}")
    if source.is_synthetic:
        from moslim_pl.data.synthetic import generate_rows

        cfg = synthetic or SyntheticConfig()
        rows = generate_rows(cfg.num_prompts, cfg.responses_per_prompt, cfg.seed, cfg.label_noise)
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
                check_label(dim, table[c][i], _where(description, i, c)) if c in table else IGNORE_LABEL
                for dim, c in zip(dimensions, cols, strict=True)
            )
            for cols in label_columns
        )
        pair_dim = None if len(texts) == 1 else ALL_HEADS
        if pair_column is not None:
            value = table[pair_column][i]
            name = "" if value is None else str(value).strip()
            if name and name not in dim_index:
                where = _where(description, i, pair_column)
                raise DataError(f"{where}: unknown dimension {value!r} (known: {', '.join(dim_index)})")
            if name:
                pair_dim = dim_index[name]
        margin = 0.0
        if margin_column is not None and table[margin_column][i] is not None:
            margin = _margin(table[margin_column][i], _where(description, i, margin_column))
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


def _where(description: str, row: int, column: str) -> str:
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
            from moslim_pl.data.schemas import get_schema

            own = get_schema(src).dimensions_for(src.schema_options)
        elif src.is_synthetic:
            from moslim_pl.data.synthetic import DIMENSIONS

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
