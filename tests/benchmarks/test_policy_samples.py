"""benchmarks/policy_samples.py: repeats and off-topic keywords counted as the oracle reads them."""

from __future__ import annotations

from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "policy_samples.py"


def test_keyword_use_and_summary(load_script) -> None:
    module = load_script(SCRIPT)
    prompt = "<helpfulness 2> tell me about rivers ."
    # delta twice (a repeat), magma is a volcanoes keyword (off topic); the oracle counts 2 distinct: level 2
    assert module.keyword_use(prompt, "the main points are delta , delta and magma . rapids too .") == (
        True,
        True,
    )
    assert module.keyword_use(prompt, "delta and estuary .") == (False, False)
    assert module.keyword_use("explain volcanoes .", "delta and estuary .") == (False, True)
    summary = module.summarize(
        [prompt] * 4, ["the main points are delta , delta and magma . rapids too .", "delta .", "", "lava ."]
    )
    assert summary == {"n": 4, "repeat": 0.25, "off_topic": 0.5, "helpfulness_levels": {0: 2, 1: 1, 2: 1}}
