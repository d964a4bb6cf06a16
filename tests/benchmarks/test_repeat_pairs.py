"""benchmarks/repeat_pairs.py: every pair's chosen side is one oracle level above, without repeats."""

from __future__ import annotations

from pathlib import Path

from moslim_pl.data.synthetic import TOPICS, oracle, tokenize, topic_of

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "repeat_pairs.py"


def test_chosen_has_one_more_level_and_the_rejected_repeats(load_script) -> None:
    rows = load_script(SCRIPT).repeat_pairs(prompts=20, per_prompt=2, seed=0)
    assert len(rows) == 40 and {r["dimension"] for r in rows} == {"helpfulness"}
    for row in rows:
        chosen, rejected = oracle(row["prompt"], row["chosen"]), oracle(row["prompt"], row["rejected"])
        assert chosen["helpfulness"] == rejected["helpfulness"] + 1 and rejected["helpfulness"] in (1, 2)
        keywords = set(TOPICS[topic_of(row["prompt"])])
        chosen_mentions = [t for t in tokenize(row["chosen"]) if t in keywords]
        rejected_mentions = [t for t in tokenize(row["rejected"]) if t in keywords]
        assert len(chosen_mentions) == len(set(chosen_mentions))  # no repeat on the chosen side
        assert len(rejected_mentions) > len(set(rejected_mentions))  # a repeat on the rejected side
    assert rows == load_script(SCRIPT).repeat_pairs(prompts=20, per_prompt=2, seed=0)
