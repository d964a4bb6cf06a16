"""The text-measured sweep: every level of every dimension asked, measured and summarized by hand."""

from __future__ import annotations

import pytest

from moslim_pl.evaluation.text_sweep import SweepRecord, length_signal, measure, summarize, sweep_answers
from moslim_pl.schema import Dimension

DIMS = [Dimension("verbosity", 0, 2), Dimension("complexity", 0, 1)]


def _answer(prompts: list[str]) -> tuple[list[str], list[bool]]:
    """A policy that says ``level + 1`` words (``w`` repeated) and stops, except at verbosity 2 (cut off)."""
    responses, finished = [], []
    for prompt in prompts:
        level = int(prompt.split(">")[0].split()[-1])
        responses.append(" ".join(["w"] * (level + 1)))
        finished.append(not prompt.startswith("<verbosity 2>"))
    return responses, finished


def test_sweep_asks_every_level_of_every_dimension() -> None:
    records = sweep_answers(DIMS, ["q1", "q2"], _answer)
    assert [(r.dimension, r.level, r.question) for r in records] == [
        ("verbosity", 0, "q1"), ("verbosity", 0, "q2"),
        ("verbosity", 1, "q1"), ("verbosity", 1, "q2"),
        ("verbosity", 2, "q1"), ("verbosity", 2, "q2"),
        ("complexity", 0, "q1"), ("complexity", 0, "q2"),
        ("complexity", 1, "q1"), ("complexity", 1, "q2"),
    ]  # fmt: skip
    assert records[2].prompt == "<verbosity 1> q1" and records[2].response == "w w"


def test_summary_by_hand() -> None:
    records = sweep_answers(DIMS, ["q1", "q2"], _answer)
    # RM levels: verbosity read exactly, complexity read backwards
    measure(
        records,
        rm_levels=lambda p, r: [{"verbosity": len(x.split()), "complexity": -len(x.split())} for x in r],
    )
    summary = summarize(records)
    # words rise with the requested verbosity: perfect rank agreement
    assert summary["spearman"]["verbosity_words"] == pytest.approx(1.0)
    assert summary["spearman"]["rm/verbosity"] == pytest.approx(1.0)
    assert summary["spearman"]["rm/complexity"] == pytest.approx(-1.0)
    assert summary["levels"]["verbosity_words"] == {"0": 1.0, "1": 2.0, "2": 3.0}
    # readability grade of "w" repeated: textstat gives the same grade per word count; just check presence
    assert set(summary["levels"]["complexity_grade"]) == {"0", "1"}
    # 2 of 10 answers (verbosity 2) were cut off; none is empty
    assert summary["no_eos_rate"] == pytest.approx(0.2) and summary["empty_rate"] == 0.0
    # bigrams: only "w w" over all answers: answers of 2 words give 1, of 3 words 2 -> distinct 1 / total
    # total = verbosity (0 + 1*2 + 2*2) + complexity (0 + 1*2) = 8
    assert summary["distinct2"] == pytest.approx(1 / 8)
    assert "relevance" not in summary  # not measured
    assert summary["mean_words"] == pytest.approx((1 + 1 + 2 + 2 + 3 + 3 + 1 + 1 + 2 + 2) / 10)


def test_a_measure_without_its_dimension_is_left_out() -> None:
    records = [
        SweepRecord("helpfulness", level, "q", f"<helpfulness {level}> q", "a b", True) for level in (0, 1)
    ]
    summary = summarize(measure(records))
    assert summary["spearman"] == {} and summary["levels"] == {}


def test_length_signal_is_the_mean_rho_within_each_question() -> None:
    def rec(question: str, words: int, level: float) -> SweepRecord:
        return SweepRecord(
            "verbosity", 0, question, "p", "r", True, words=words, rm_levels={"verbosity": level}
        )

    records = [
        # q1: the head orders the three answers as their lengths do: rho 1
        rec("q1", 10, 0.1),
        rec("q1", 20, 0.5),
        rec("q1", 30, 0.9),
        # q2: length ranks (1, 2, 3) against head ranks (3, 1, 2): 1 - 6 * (4 + 1 + 1) / (3 * 8) = -0.5
        rec("q2", 10, 0.9),
        rec("q2", 20, 0.1),
        rec("q2", 30, 0.5),
        # q3: two distinct lengths only: left out
        rec("q3", 10, 0.1),
        rec("q3", 10, 0.2),
        rec("q3", 30, 0.9),
    ]
    rho, questions = length_signal(records, "verbosity")
    assert questions == 2
    assert rho == pytest.approx((1.0 - 0.5) / 2)
    assert length_signal(records[6:], "verbosity") == (0.0, 0)
