"""The dimension schema: which preference dimensions exist, their levels and where their labels come from.

A dimension's *levels* are what users write in prefixes (``<verbosity 2>``) and what the reward
model's head classifies. Without coarsening they are the raw label range ``low..high``. With
``bins`` the raw range is cut into ``bins`` equal-width bins and the levels become
``low..low + bins - 1`` (the paper's label-granularity ablation). Real labels are often skewed
(HelpSteer's verbosity 4 is 2 rows in 500), so equal-width bins can leave a level empty; ``edges``
cuts the raw range at chosen labels instead (``edges: [2, 3]`` puts raw 0-1, 2 and 3-4 in levels
``low``, ``low + 1``, ``low + 2``). A head's class index is always ``level - low``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from moslim_pl.errors import MoslimError


class SchemaError(MoslimError):
    """A dimension declaration or a label does not fit the schema."""


@dataclass(frozen=True)
class Dimension:
    """One preference dimension.

    Args:
        name: the name used in prefixes and metric keys (``val/acc/<name>``).
        low: lowest raw label (inclusive).
        high: highest raw label (inclusive).
        column: the data column holding the raw label; defaults to ``name``.
        bins: coarsen the raw range into this many equal-width levels.
        edges: coarsen at these raw labels instead: strictly increasing, each in ``low + 1..high``; a
            raw label ``x`` goes to the level ``low + (number of edges <= x)``, so ``len(edges) + 1``
            levels. Excludes ``bins``.
        default: level targeted when a prompt carries no prefix; ``None`` leaves the dimension out
            of the default targets (if no dimension sets one, every dimension targets its top level).
    """

    name: str
    low: int = 0
    high: int = 4
    column: str | None = None
    bins: int | None = None
    default: int | None = None
    edges: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        name = self.name
        # ASCII only: the prefix grammar (moslim_pl.prefix) reads names of ASCII letters, digits, '_', '-'
        if (
            not isinstance(name, str)
            or not name.isascii()
            or not name.replace("_", "").replace("-", "").isalnum()
        ):
            raise SchemaError(
                f"dimension name {name!r} must be non-empty letters, digits, '_' or '-' (ASCII)"
            )
        for field in ("low", "high", "bins", "default"):
            value = getattr(self, field)
            if (value is not None or field in ("low", "high")) and (
                not isinstance(value, int) or isinstance(value, bool)
            ):
                raise SchemaError(f"dimension {name!r}: {field} must be an integer, got {value!r}")
        if self.high <= self.low:
            raise SchemaError(f"dimension {self.name!r}: high ({self.high}) must exceed low ({self.low})")
        if self.bins is not None and not 2 <= self.bins <= self.high - self.low + 1:
            raise SchemaError(
                f"dimension {self.name!r}: bins must be in [2, {self.high - self.low + 1}], got {self.bins}"
            )
        if self.edges is not None:
            self._check_edges()
        if self.default is not None and not self.min_level <= self.default <= self.max_level:
            raise SchemaError(
                f"dimension {self.name!r}: default {self.default} outside levels "
                f"{self.min_level}..{self.max_level}"
            )

    def _check_edges(self) -> None:
        edges = self.edges
        if self.bins is not None:
            raise SchemaError(f"dimension {self.name!r}: set bins or edges, not both")
        if (
            not isinstance(edges, list | tuple)
            or not edges
            or any(not isinstance(e, int) or isinstance(e, bool) for e in edges)
        ):
            raise SchemaError(
                f"dimension {self.name!r}: edges must be a non-empty list of integers, got {edges!r}"
            )
        if list(edges) != sorted(set(edges)) or edges[0] <= self.low or edges[-1] > self.high:
            raise SchemaError(
                f"dimension {self.name!r}: edges must increase strictly within {self.low + 1}..{self.high}, "
                f"got {list(edges)}"
            )
        object.__setattr__(self, "edges", tuple(edges))  # a YAML list becomes the hashable tuple

    @property
    def source_column(self) -> str:
        return self.column or self.name

    @property
    def num_levels(self) -> int:
        if self.edges is not None:
            return len(self.edges) + 1
        return self.bins or self.high - self.low + 1

    @property
    def min_level(self) -> int:
        return self.low

    @property
    def max_level(self) -> int:
        return self.low + self.num_levels - 1

    def label_to_class(self, raw: int) -> int:
        """Map a raw label from the data to the head's class index (coarsening if ``bins`` is set)."""
        if not self.low <= raw <= self.high:
            raise SchemaError(f"label {raw} of dimension {self.name!r} is outside {self.low}..{self.high}")
        offset = raw - self.low
        if self.edges is not None:
            return sum(edge <= raw for edge in self.edges)
        if self.bins is None:
            return offset
        return offset * self.bins // (self.high - self.low + 1)

    def level_to_class(self, level: int) -> int:
        """Map a prefix level to the head's class index."""
        if not self.min_level <= level <= self.max_level:
            raise SchemaError(
                f"level {level} of dimension {self.name!r} is outside {self.min_level}..{self.max_level}"
            )
        return level - self.low

    def to_dict(self) -> dict:
        """The fields as plain values (``edges`` only when set, so exports without it read as before)."""
        fields = asdict(self)
        if self.edges is None:
            del fields["edges"]
        else:
            fields["edges"] = list(self.edges)
        return fields


def check_dimensions(dimensions: Sequence[Dimension]) -> tuple[Dimension, ...]:
    """Validate a schema (non-empty, unique names) and return it as a tuple."""
    dims = tuple(Dimension(**d) if isinstance(d, dict) else d for d in dimensions)
    if not dims:
        raise SchemaError("the dimension schema is empty: declare at least one dimension")
    names = [d.name for d in dims]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"duplicate dimension name(s): {', '.join(dupes)}")
    return dims


def describe_dimensions(dimensions: Sequence[Dimension]) -> str:
    """``verbosity 0..3, formality 0..2`` (names and raw ranges, with ``bins``), for messages."""
    return ", ".join(
        f"{d.name} {d.low}..{d.high}"
        + (f" in {d.bins} bins" if d.bins else "")
        + (f" cut at {list(d.edges)}" if d.edges else "")
        for d in dimensions
    )


def default_targets(dimensions: Sequence[Dimension]) -> dict[str, int]:
    """Levels targeted by a prompt without a prefix (see ``Dimension.default``)."""
    chosen = {d.name: d.default for d in dimensions if d.default is not None}
    return chosen or {d.name: d.max_level for d in dimensions}
