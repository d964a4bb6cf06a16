"""RM-independent text measurements: hand-computed values, and MiniLM relevance when its offline copy is there."""

from __future__ import annotations

import builtins
import sys

import pytest

from moslim_pl.errors import MoslimError
from moslim_pl.evaluation.text_metrics import (
    DEFAULT_RELEVANCE_MODEL,
    Relevance,
    distinct_n,
    empty_rate,
    no_eos_rate,
    readability_grade,
    summarize_texts,
    word_count,
)
from moslim_pl.models.backbone import OFFLINE_MIRRORS, mirror_folder

# 12 monosyllabic words, one sentence: textstat counts 12 syllables (CMU dictionary: one vowel each)
SIMPLE = "The big red dog ran up the hill to see the sun."


def test_word_count_by_hand():
    assert word_count("Hello, world!  How are\tyou?\n") == 5  # punctuation stays with its word
    assert word_count("") == 0
    assert word_count(" \n\t ") == 0


def test_distinct_n_by_hand():
    # bigrams: "a b a b" -> ab, ba, ab; "a b" -> ab (none across the boundary "b"|"a"): {ab, ba} = 2 of 4
    assert distinct_n(["a b a b", "a b"]) == pytest.approx(0.5)
    # lower-cased: "A B" and "a b" are the same bigram; 1 distinct of 2
    assert distinct_n(["A B", "a b"]) == pytest.approx(0.5)
    # unigrams of "x y x" and "z": x, y, x, z -> 3 distinct of 4
    assert distinct_n(["x y x", "z"], n=1) == pytest.approx(0.75)
    # trigrams: "a b c d" -> abc, bcd; "b c d" -> bcd: 2 distinct of 3
    assert distinct_n(["a b c d", "b c d"], n=3) == pytest.approx(2 / 3)
    assert distinct_n(["one", "", "two"]) == 0.0  # no text has two words: no bigram
    assert distinct_n([]) == 0.0
    with pytest.raises(MoslimError, match="n >= 1"):
        distinct_n(["a b"], n=0)


def test_empty_rate_by_hand():
    # "" and " \n" are empty; "." and "a" are not: 2 of 4
    assert empty_rate(["", " \n", ".", "a"]) == pytest.approx(0.5)
    assert empty_rate(["a"]) == 0.0
    assert empty_rate([]) == 0.0


def test_no_eos_rate_by_hand():
    assert no_eos_rate([True, False, False, True]) == pytest.approx(0.5)
    assert no_eos_rate([False, True, True]) == pytest.approx(1 / 3)
    assert no_eos_rate([]) == 0.0


def test_readability_grade_is_flesch_kincaid_by_hand():
    # 12 words, 1 sentence, 12 syllables: 0.39 * 12/1 + 11.8 * 12/12 - 15.59 = 4.68 + 11.8 - 15.59 = 0.89
    assert readability_grade(SIMPLE) == pytest.approx(0.89, abs=1e-9)
    # "The cat sat on the mat.": 6 words, 6 syllables: 0.39 * 6 + 11.8 - 15.59 = -1.45 (below grade 0)
    assert readability_grade("The cat sat on the mat.") == pytest.approx(-1.45, abs=1e-9)
    assert readability_grade("") == 0.0
    assert readability_grade("  \n ") == 0.0


def test_readability_grade_without_textstat_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_textstat(name, *args, **kwargs):
        if name == "textstat":
            raise ImportError("No module named 'textstat'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "textstat", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_textstat)
    with pytest.raises(MoslimError, match="pip install 'textstat") as err:
        readability_grade(SIMPLE)
    assert "\n" not in str(err.value)


def test_readability_grade_without_cmudict_says_what_to_do(monkeypatch):
    """textstat 0.7.9+ raises NLTK's LookupError offline (no cmudict corpus): one line saying what to do."""
    import textstat

    def missing_corpus(text):
        raise LookupError("Resource 'cmudict' not found.\n  Please use the NLTK Downloader")

    monkeypatch.setattr(textstat, "flesch_kincaid_grade", missing_corpus)
    with pytest.raises(MoslimError, match="cmudict") as err:
        readability_grade(SIMPLE)
    assert "\n" not in str(err.value)


def test_summarize_texts_without_relevance_by_hand():
    answers = ["a b a b", "", SIMPLE]
    summary = summarize_texts(["q1", "q2", "q3"], answers, [True, False, True])
    assert list(summary) == ["empty_rate", "no_eos_rate", "distinct2", "mean_words", "mean_grade"]
    assert summary["empty_rate"] == pytest.approx(1 / 3)
    assert summary["no_eos_rate"] == pytest.approx(1 / 3)
    # bigrams: ab, ba, ab from the first answer, 11 all different ones from SIMPLE ("the big" ... "the sun."):
    # 2 + 11 = 13 distinct of 3 + 11 = 14
    assert summary["distinct2"] == pytest.approx(13 / 14)
    assert summary["mean_words"] == pytest.approx((4 + 0 + 12) / 3)
    # "a b a b" has no sentence end: 4 words, 1 sentence, 4 syllables -> 0.39 * 4 + 11.8 - 15.59 = -2.23
    assert summary["mean_grade"] == pytest.approx((-2.23 + 0.0 + 0.89) / 3)
    assert summarize_texts([], [], []) == {
        "empty_rate": 0.0,
        "no_eos_rate": 0.0,
        "distinct2": 0.0,
        "mean_words": 0.0,
        "mean_grade": 0.0,
    }
    with pytest.raises(MoslimError, match="one of each per answer"):
        summarize_texts(["q"], ["a", "b"], [True, True])


@pytest.fixture(scope="module")
def relevance() -> Relevance:
    if mirror_folder(OFFLINE_MIRRORS[DEFAULT_RELEVANCE_MODEL]) is None:
        pytest.skip(
            f"the offline copy of {DEFAULT_RELEVANCE_MODEL} "
            f"({OFFLINE_MIRRORS[DEFAULT_RELEVANCE_MODEL].package}) is not installed"
        )
    return Relevance(batch_size=2)  # batches of 2: the tests below span several batches


QUESTION = "How do I bake a loaf of bread at home?"
RELATED = "Mix flour, water, salt and yeast, knead the dough, let it rise, then bake it in a hot oven."
UNRELATED = "The stock market closed higher on Tuesday after strong quarterly earnings reports."


def test_relevance_identical_texts_score_one(relevance):
    assert relevance([QUESTION, RELATED], [QUESTION, RELATED]) == pytest.approx([1.0, 1.0], abs=1e-5)
    # each distinct text is embedded once, so the above is the embeddings' norm: [3, 384] unit rows
    embeddings = relevance.embed([QUESTION, RELATED, UNRELATED])
    assert embeddings.shape == (3, 384)
    assert embeddings.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_relevance_is_symmetric_and_ranks_related_above_unrelated(relevance):
    forward = relevance([QUESTION, QUESTION], [RELATED, UNRELATED])
    backward = relevance([RELATED, UNRELATED], [QUESTION, QUESTION])
    assert forward == pytest.approx(backward, abs=1e-6)
    assert all(-1.0 <= score <= 1.0 for score in forward)
    assert forward[0] > forward[1] + 0.2


def test_relevance_empty_answer_scores_zero(relevance):
    assert relevance([QUESTION, QUESTION, QUESTION], ["", " \n", RELATED])[:2] == [0.0, 0.0]
    assert relevance([QUESTION], [""]) == [0.0]
    assert relevance([], []) == []
    with pytest.raises(MoslimError, match="2 questions but 1 answers"):
        relevance([QUESTION, QUESTION], [RELATED])


def test_relevance_matches_sentence_transformers(relevance):
    # computed once with sentence-transformers 6.2.0 on the same offline copy:
    # SentenceTransformer(folder).encode([QUESTION, RELATED, UNRELATED], normalize_embeddings=True), then
    # the dot products of the question's embedding with the other two (0.6035149, -0.0099763)
    assert relevance([QUESTION, QUESTION], [RELATED, UNRELATED]) == pytest.approx(
        [0.6035149, -0.0099763], abs=1e-5
    )


def test_summarize_texts_with_relevance(relevance):
    summary = summarize_texts([QUESTION, QUESTION], [RELATED, ""], [True, False], relevance=relevance)
    assert list(summary) == [
        "empty_rate",
        "no_eos_rate",
        "distinct2",
        "relevance",
        "mean_words",
        "mean_grade",
    ]
    assert summary["relevance"] == pytest.approx(relevance([QUESTION], [RELATED])[0] / 2)
