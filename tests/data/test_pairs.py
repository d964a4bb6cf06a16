"""Pairs derived from pointwise labels within each prompt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moslim_pl.data.pairs import largest_gaps, within_prompt_pairs


def test_within_prompt_pairs_by_hand() -> None:
    rows = [
        {"prompt": "p", "response": "a", "h": 3, "v": 1},
        {"prompt": "p", "response": "b", "h": 1, "v": 1},
        {"prompt": "q", "response": "c", "h": 2, "v": None},
        {"prompt": "p", "response": "d", "h": 3, "v": 0},
        {"prompt": "q", "response": "e", "h": 2, "v": 4},
    ]
    pairs = within_prompt_pairs(rows, ["h", "v"])
    got = [(p["prompt"], p["chosen"], p["rejected"], p["dimension"], p["margin"]) for p in pairs]
    # h on p: (a,b) 3>1, (a,d) equal, (b,d) 1<3 -> d chosen; v on p: (a,d), (b,d); q: equal h, missing v
    assert got == [
        ("p", "a", "b", "h", 2),
        ("p", "d", "b", "h", 2),
        ("p", "a", "d", "v", 1),
        ("p", "b", "d", "v", 1),
    ]


def test_largest_gaps_keeps_the_widest_pairs_per_prompt_and_dimension() -> None:
    pairs = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "dimension": "h", "margin": 1},
        {"prompt": "p", "chosen": "c", "rejected": "b", "dimension": "h", "margin": 3},
        {"prompt": "p", "chosen": "a", "rejected": "d", "dimension": "v", "margin": 2},
        {"prompt": "p", "chosen": "c", "rejected": "d", "dimension": "v", "margin": 2},
        {"prompt": "q", "chosen": "e", "rejected": "f", "dimension": "h", "margin": 1},
    ]
    kept = largest_gaps(pairs, per_prompt=1)
    # p/h: margin 3 beats 1; p/v: a tie keeps the first; q/h: the only pair. No margin key left.
    assert [(p["chosen"], p["rejected"], p["dimension"]) for p in kept] == [
        ("c", "b", "h"),
        ("a", "d", "v"),
        ("e", "f", "h"),
    ]
    assert all("margin" not in p for p in kept)
    assert len(largest_gaps(pairs, per_prompt=2)) == 5
    with pytest.raises(ValueError, match="per_prompt must be at least 1"):
        largest_gaps(pairs, per_prompt=0)


def test_derive_pairs_script_writes_a_pair_file(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p", "response": "a", "h": 3, "v": 1},
        {"prompt": "p", "response": "b", "h": 1, "v": 2},
    ]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "pairs.jsonl"
    script = Path(__file__).resolve().parents[2] / "scripts" / "derive_pairs.py"
    args = [sys.executable, str(script), str(source), str(out), "--dimensions", "h", "v"]
    subprocess.run(args, check=True)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == [
        {"prompt": "p", "chosen": "a", "rejected": "b", "dimension": "h"},
        {"prompt": "p", "chosen": "b", "rejected": "a", "dimension": "v"},
    ]
    bad = subprocess.run([*args[:2], str(tmp_path / "none.jsonl"), str(out), "--dimensions", "h"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "none.jsonl" in bad.stderr
