"""The synthetic preference world: determinism, oracle-consistent labels, balance and oracle robustness."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moslim_pl.data import synthetic
from moslim_pl.data.synthetic import (
    DIMENSIONS,
    LEVEL_NAMES,
    TOPICS,
    generate_prompts,
    generate_rows,
    oracle,
    vocabulary,
)
from moslim_pl.errors import MoslimError
from moslim_pl.prefix import format_prefix
from moslim_pl.schema import check_dimensions

NAMES = [d.name for d in DIMENSIONS]
TOKEN = re.compile(r"\w+|[^\w\s]")  # the tiny word-level tokenizer's split


def _labels(row: dict) -> dict[str, int]:
    return {name: row[name] for name in NAMES}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate_rows(num_prompts=500, responses_per_prompt=8, seed=3)


def test_schema() -> None:
    assert check_dimensions(DIMENSIONS) == DIMENSIONS
    assert NAMES == ["verbosity", "formality", "helpfulness"]
    assert all(d.default is not None for d in DIMENSIONS)
    assert {d.name: d.num_levels for d in DIMENSIONS} == {n: len(v) for n, v in LEVEL_NAMES.items()}
    assert len(TOPICS) >= 40


def test_deterministic_by_seed() -> None:
    assert generate_rows(50, 3, seed=7) == generate_rows(50, 3, seed=7)
    assert generate_rows(50, 3, seed=7) != generate_rows(50, 3, seed=8)
    assert generate_prompts(100, seed=1) == generate_prompts(100, seed=1)
    assert generate_prompts(100, seed=1) != generate_prompts(100, seed=2)
    assert vocabulary() == vocabulary()


def test_prompts_distinct_and_cover_topics() -> None:
    prompts = generate_prompts(320, seed=0)
    assert len(set(prompts)) == 320
    assert {synthetic.topic_of(p) for p in prompts[: len(TOPICS)]} == set(TOPICS)
    assert len(generate_prompts(1000, seed=0)) == 1000
    assert generate_prompts(0, seed=0) == []


def test_rows_shape(rows: list[dict]) -> None:
    assert len(rows) == 500 * 8
    assert all(set(r) == {"prompt", "response", *NAMES} for r in rows)
    assert [r["prompt"] for r in rows[::8]] == generate_prompts(500, seed=3)


def test_labels_equal_oracle(rows: list[dict]) -> None:
    for row in rows:
        assert oracle(row["prompt"], row["response"]) == _labels(row), row


def test_distractors_do_not_count() -> None:
    noisy = generate_rows(100, 8, seed=4, distractor_rate=1.0)
    for row in noisy:
        assert oracle(row["prompt"], row["response"]) == _labels(row), row
    clean = {r["response"] for r in generate_rows(100, 8, seed=4)}
    assert clean.isdisjoint(r["response"] for r in noisy)


def test_repeated_keywords_keep_the_oracle_levels() -> None:
    repeated = generate_rows(100, 8, seed=4, repeat_rate=1.0)
    with_keywords = 0
    for row in repeated:
        assert oracle(row["prompt"], row["response"]) == _labels(row), row
        tokens = synthetic.tokenize(row["response"])
        mentions = [t for t in tokens if t in TOPICS[synthetic.topic_of(row["prompt"])]]
        if mentions:  # every response with keywords repeats 1-4 of them: more mentions than distinct ones
            with_keywords += 1
            assert 1 <= len(mentions) - len(set(mentions)) <= 4, row
    assert with_keywords > 500
    # a rate of 0 is the default world, response for response
    assert generate_rows(20, 4, seed=4, repeat_rate=0.0) == generate_rows(20, 4, seed=4)
    with pytest.raises(MoslimError, match="repeat_rate"):
        generate_rows(2, 2, repeat_rate=1.5)


def test_generated_samples_sit_inside_buckets(rows: list[dict]) -> None:
    # Generation uses only central counts, so a learner never has to split adjacent counts of keywords.
    for row in rows:
        tokens = synthetic.tokenize(row["response"])
        keywords = set(tokens).intersection(TOPICS[synthetic.topic_of(row["prompt"])])
        assert len(keywords) == {0: 0, 1: 1, 2: 3, 3: 6}[row["helpfulness"]]
        assert (
            synthetic.count_sentences(row["response"])
            in {0: {1}, 1: {2, 3}, 2: {4, 5}, 3: {6, 7}}[row["verbosity"]]
        )
        formal = sum(t in synthetic.FORMAL_MARKERS for t in tokens)
        casual = sum(t in synthetic.CASUAL_MARKERS for t in tokens)
        assert (formal, casual) in {
            0: {(0, 0), (0, 1), (0, 2)},
            1: {(1, 1), (2, 2)},
            2: {(1, 0), (2, 0)},
        }[row["formality"]]


def test_levels_uniform(rows: list[dict]) -> None:
    for dim in DIMENSIONS:
        counts = Counter(r[dim.name] for r in rows)
        assert set(counts) == set(range(dim.min_level, dim.max_level + 1))
        expected = len(rows) / dim.num_levels
        assert all(abs(c - expected) < 0.15 * expected for c in counts.values()), (dim.name, counts)


def test_dimensions_independent(rows: list[dict]) -> None:
    # The distribution of one dimension given a level of another stays close to its marginal.
    for a in NAMES:
        for b in NAMES:
            if a == b:
                continue
            marginal = Counter(r[b] for r in rows)
            for level in {r[a] for r in rows}:
                subset = [r[b] for r in rows if r[a] == level]
                cond = Counter(subset)
                for value, count in marginal.items():
                    assert abs(cond[value] / len(subset) - count / len(rows)) < 0.06, (a, level, b, value)


def test_response_length(rows: list[dict]) -> None:
    words = [sum(t[0].isalnum() for t in TOKEN.findall(r["response"])) for r in rows]
    tokens = [len(TOKEN.findall(r["prompt"] + " " + r["response"])) for r in rows]
    assert max(words) <= 70
    assert max(tokens) <= 100  # fits a 128-token reward model with special tokens


def test_tokens_in_vocabulary(rows: list[dict]) -> None:
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    assert all(t == t.lower() for t in vocab)
    assert len(vocab) <= 400
    used = {t for r in rows for t in TOKEN.findall(f"{r['prompt']} {r['response']}".lower())}
    assert used <= set(vocab)
    # The prefix tags a policy reads are in the vocabulary too, but never in generated texts.
    prefix = format_prefix({d.name: d.max_level for d in DIMENSIONS}, "")
    assert set(TOKEN.findall(prefix)) <= set(vocab)
    assert set(TOKEN.findall(prefix)).isdisjoint(vocabulary(prefix_tokens=False))


def test_marker_and_keyword_lists_disjoint_from_fillers() -> None:
    # The oracle counts markers and keywords anywhere, so no template word may be one of them.
    special = set(synthetic.FORMAL_MARKERS) | set(synthetic.CASUAL_MARKERS) | set(synthetic._KEYWORD_TOPIC)
    templates = synthetic._PROMPT_TEMPLATES + synthetic._FILLER_TEMPLATES + synthetic._KEYWORD_TEMPLATES
    template_words = {t for text in templates for t in TOKEN.findall(text.format(t="", k=""))}
    assert template_words.isdisjoint(special | set(TOPICS))
    assert len(synthetic._KEYWORD_TOPIC) == 6 * len(TOPICS)  # each keyword belongs to one topic only


def test_label_noise_fraction() -> None:
    clean = generate_rows(300, 8, seed=5)
    noisy = generate_rows(300, 8, seed=5, label_noise=0.2)
    assert [r["response"] for r in clean] == [r["response"] for r in noisy]
    changed = sum(c[n] != z[n] for c, z in zip(clean, noisy, strict=True) for n in NAMES)
    assert abs(changed / (len(clean) * len(NAMES)) - 0.2) < 0.02
    for row in noisy:
        for dim in DIMENSIONS:
            assert dim.min_level <= row[dim.name] <= dim.max_level
    with pytest.raises(MoslimError):
        generate_rows(10, 2, label_noise=1.5)


def test_prefix_does_not_change_oracle(rows: list[dict]) -> None:
    for i, row in enumerate(rows[:400]):
        dim = DIMENSIONS[i % len(DIMENSIONS)]
        targets = {dim.name: i % dim.num_levels + dim.min_level}
        if i % 2:
            targets = {d.name: (i + k) % d.num_levels for k, d in enumerate(DIMENSIONS)}
        prefixed = format_prefix(targets, row["prompt"])
        assert oracle(prefixed, row["response"]) == oracle(row["prompt"], row["response"])


def test_oracle_examples() -> None:
    prompt = "Tell me about rivers."
    assert oracle(prompt, "") == {"verbosity": 0, "formality": 0, "helpfulness": 0}
    assert oracle("", "") == {"verbosity": 0, "formality": 0, "helpfulness": 0}
    assert oracle(prompt, "Rivers have a delta.") == {"verbosity": 0, "formality": 0, "helpfulness": 1}
    # Distinct keywords of the prompt's topic: 0 | 1 | 2-4 | 5+. Repeats and other topics do not count.
    assert oracle(prompt, "delta delta delta magma lava")["helpfulness"] == 1
    assert oracle(prompt, "Delta, estuary.")["helpfulness"] == 2
    assert oracle(prompt, "Delta, estuary, rapids, meander.")["helpfulness"] == 2
    assert oracle(prompt, "Delta, estuary. Tributary! rapids meander")["helpfulness"] == 3
    assert oracle("describe volcanoes .", "Delta, estuary. Tributary! rapids meander")["helpfulness"] == 0
    assert oracle("hello", "delta")["helpfulness"] == 0
    # Sentences: words ended by . ! ? or the end of the text; bare punctuation is no sentence.
    assert oracle(prompt, "a. b! c? d")["verbosity"] == 2
    assert oracle(prompt, "a. b. c. d. e. f.")["verbosity"] == 3
    assert oracle(prompt, "... !!! ???")["verbosity"] == 0
    # Formality thresholds: share of formal markers < 1/3, in [1/3, 2/3], > 2/3.
    assert oracle(prompt, "yeah, moreover, honestly")["formality"] == 1
    assert oracle(prompt, "yeah, honestly, basically, moreover")["formality"] == 0
    assert oracle(prompt, "moreover, notably, yeah")["formality"] == 1
    assert oracle(prompt, "moreover, notably, furthermore, yeah")["formality"] == 2
    assert oracle(prompt, "Moreover.")["formality"] == 2


def test_oracle_robust_to_spacing_and_case(rows: list[dict]) -> None:
    for row in rows[:300]:
        glued = re.sub(r" ([.,?!])", r"\1", row["response"])
        assert glued != row["response"]
        shouted = glued.upper()
        spaced = "  " + row["response"].replace(" ", "   ") + "  "
        expected = _labels(row)
        for response in (glued, shouted, spaced):
            assert oracle(row["prompt"].upper(), response) == expected


def test_oracle_on_malformed_prefix() -> None:
    # A broken tag is not a valid prefix; the oracle still answers instead of raising.
    assert oracle("<verbosity 9> tell me about bees .", "pollen .")["helpfulness"] == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.text(max_size=300))
def test_oracle_total_on_any_text(prompt: str, response: str) -> None:
    levels = oracle(prompt, response)
    assert set(levels) == set(NAMES)
    for dim in DIMENSIONS:
        assert dim.min_level <= levels[dim.name] <= dim.max_level


def test_fast() -> None:
    start = time.perf_counter()
    assert len(generate_rows(2500, 4, seed=0)) == 10_000
    assert time.perf_counter() - start < 2.0
