"""Pairs derived from pointwise labels within each prompt."""

from __future__ import annotations

from moslim_pl.data.pairs import within_prompt_pairs


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
