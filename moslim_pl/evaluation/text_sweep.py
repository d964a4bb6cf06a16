"""A controllability sweep measured on the text itself, beside the reward model's reading.

:func:`sweep_answers` asks every question under every single-dimension prefix (``<verbosity 0> ...``,
``<verbosity 1> ...``, ...); :func:`measure` adds what each answer shows without a reward model (word
count, readability grade, relevance; ``moslim_pl.evaluation.text_metrics``) and, optionally, the RM's
expected level of every head; :func:`summarize` turns the records into Spearman's rho per measured
dimension and the degeneration rates:

    {"spearman": {"verbosity_words": rho, "complexity_grade": rho, "rm/<dim>": rho, ...},
     "empty_rate": ..., "no_eos_rate": ..., "distinct2": ..., "relevance": ...,
     "levels": {"verbosity_words": {"0": mean, ...}, ...}}

A text measure applies to the sweep of the dimension it stands for (``TEXT_MEASURES``): word counts are
correlated with the requested verbosity, readability grades with the requested complexity. Which
dimensions exist is the caller's: a measure whose dimension is not swept is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from moslim_pl.evaluation.controllability import spearman
from moslim_pl.evaluation.text_metrics import (
    Relevance,
    distinct_n,
    empty_rate,
    no_eos_rate,
    readability_grade,
    word_count,
)
from moslim_pl.prefix import format_prefix
from moslim_pl.schema import Dimension

TEXT_MEASURES: dict[str, tuple[str, str]] = {
    "verbosity_words": ("verbosity", "words"),
    "complexity_grade": ("complexity", "grade"),
}
"""Spearman key -> (the dimension whose sweep it measures, the record field it reads)."""

Answer = Callable[[list[str]], tuple[list[str], list[bool]]]
"""Prompts with prefix -> (responses, whether each ended with EOS)."""


@dataclass
class SweepRecord:
    """One answer of the sweep and what was measured in it."""

    dimension: str
    level: int
    question: str
    prompt: str
    response: str
    finished: bool
    words: int = 0
    grade: float = 0.0
    relevance: float | None = None
    rm_levels: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def sweep_answers(
    dimensions: Sequence[Dimension], questions: Sequence[str], answer: Answer
) -> list[SweepRecord]:
    """Every question under every level of every dimension (one named dimension per prompt).

    ``len(questions) * sum(levels)`` records, in dimension, then level, then question order.
    """
    records = []
    for dim in dimensions:
        for level in range(dim.min_level, dim.max_level + 1):
            prompts = [format_prefix({dim.name: level}, q) for q in questions]
            responses, finished = answer(prompts)
            records += [
                SweepRecord(dim.name, level, q, p, r, bool(f))
                for q, p, r, f in zip(questions, prompts, responses, finished, strict=True)
            ]
    return records


def measure(
    records: list[SweepRecord],
    relevance: Relevance | None = None,
    rm_levels: Callable[[list[str], list[str]], list[dict[str, float]]] | None = None,
) -> list[SweepRecord]:
    """Fill each record's word count and readability grade; its relevance and RM levels when given.

    Args:
        relevance: question/answer cosine similarity (``text_metrics.Relevance``).
        rm_levels: (prompts with prefix, responses) -> one ``{head: expected level}`` per pair.
    """
    for record in records:
        record.words = word_count(record.response)
        record.grade = readability_grade(record.response)
    if relevance is not None:
        scores = relevance([r.question for r in records], [r.response for r in records])
        for record, score in zip(records, scores, strict=True):
            record.relevance = float(score)
    if rm_levels is not None:
        levels = rm_levels([r.prompt for r in records], [r.response for r in records])
        for record, row in zip(records, levels, strict=True):
            record.rm_levels = {name: float(value) for name, value in row.items()}
    return records


def _per_level(records: Sequence[SweepRecord], read: Callable[[SweepRecord], float]) -> dict[str, float]:
    by_level: dict[int, list[float]] = {}
    for record in records:
        by_level.setdefault(record.level, []).append(read(record))
    return {str(level): sum(v) / len(v) for level, v in sorted(by_level.items())}


def summarize(records: Sequence[SweepRecord]) -> dict:
    """The sweep's summary (see the module docstring); rates and means over every answer."""
    spearman_table: dict[str, float] = {}
    levels: dict[str, dict[str, float]] = {}
    series: list[tuple[str, list[SweepRecord], Callable[[SweepRecord], float]]] = []
    for key, (dimension, attribute) in TEXT_MEASURES.items():
        rows = [r for r in records if r.dimension == dimension]
        if rows:
            series.append((key, rows, lambda r, a=attribute: float(getattr(r, a))))
    swept = list(dict.fromkeys(r.dimension for r in records))
    for dimension in swept:
        rows = [r for r in records if r.dimension == dimension and dimension in r.rm_levels]
        if rows:
            series.append((f"rm/{dimension}", rows, lambda r, d=dimension: r.rm_levels[d]))
    for key, rows, read in series:
        spearman_table[key] = spearman([r.level for r in rows], [read(r) for r in rows])
        levels[key] = _per_level(rows, read)
    responses = [r.response for r in records]
    summary = {
        "spearman": spearman_table,
        "empty_rate": empty_rate(responses),
        "no_eos_rate": no_eos_rate([r.finished for r in records]),
        "distinct2": distinct_n(responses, 2),
    }
    scored = [r.relevance for r in records if r.relevance is not None]
    if scored:
        summary["relevance"] = sum(scored) / len(scored)
    summary["mean_words"] = sum(r.words for r in records) / max(len(records), 1)
    summary["levels"] = levels
    return summary


def length_signal(records: Sequence[SweepRecord], head: str) -> tuple[float, int]:
    """How closely an RM head follows answer length among the answers to one question.

    For each question, Spearman's rho between the answers' word counts and the head's expected level
    (``rm_levels[head]``), over that question's answers (one per requested level of every dimension);
    questions whose answers have fewer than 3 distinct word counts are left out (no ordering to read).
    Returns ``(mean rho over the questions kept, questions kept)``. RL compares samples of one prompt, so
    this, not a rho pooled over questions, is the length signal a policy gets from the head.
    """
    by_question: dict[str, list[SweepRecord]] = {}
    for record in records:
        by_question.setdefault(record.question, []).append(record)
    rhos = [
        spearman([r.words for r in rows], [r.rm_levels[head] for r in rows])
        for rows in by_question.values()
        if len({r.words for r in rows}) >= 3
    ]
    return (sum(rhos) / len(rhos) if rhos else 0.0), len(rhos)
