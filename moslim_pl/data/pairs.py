"""Preference pairs derived from pointwise labels: two responses to one prompt whose labels differ on a
dimension make a pair judged on that dimension (the higher label is chosen).

This turns rated data (HelpSteer) into the pairwise form of HH-RLHF or TRL's ``prompt``/``chosen``/
``rejected`` files, e.g. to compare a Bradley-Terry reward model with the classification heads on the
same responses (``benchmarks/rm_cv.py``, docs/results.md). ``scripts/derive_pairs.py`` writes such a file.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any


def within_prompt_pairs(
    rows: Sequence[Mapping[str, Any]],
    dimensions: Sequence[str],
    prompt_column: str = "prompt",
    response_column: str = "response",
) -> list[dict[str, Any]]:
    """Every pair of responses to one prompt with two different labels on a dimension, as pair rows.

    Args:
        rows: pointwise rows with ``prompt_column``, ``response_column`` and an integer per dimension
            (``None`` or absent: missing, never paired).
        dimensions: the label columns to pair on.

    Returns:
        ``{"prompt", "chosen", "rejected", "dimension", "margin"}`` rows (``margin``: the label
        difference), grouped by prompt in first-seen order, then by dimension, then by response order.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[prompt_column], []).append(row)
    pairs = []
    for prompt, group in groups.items():
        for dim in dimensions:
            for a, b in itertools.combinations(group, 2):
                la, lb = a.get(dim), b.get(dim)
                if la is None or lb is None or la == lb or a[response_column] == b[response_column]:
                    continue
                chosen, rejected = (a, b) if la > lb else (b, a)
                pairs.append(
                    {
                        "prompt": prompt,
                        "chosen": chosen[response_column],
                        "rejected": rejected[response_column],
                        "dimension": dim,
                        "margin": abs(la - lb),
                    }
                )
    return pairs


def largest_gaps(pairs: Sequence[Mapping[str, Any]], per_prompt: int) -> list[dict[str, Any]]:
    """At most ``per_prompt`` pairs per (prompt, dimension), largest ``margin`` first, ``margin`` dropped.

    ``pairs``: :func:`within_prompt_pairs`' rows. Equal margins keep their input order; the result keeps
    the groups' first-seen order, so a plain Bradley-Terry file comes out the same on every run.
    """
    if per_prompt < 1:
        raise ValueError(f"per_prompt must be at least 1, got {per_prompt}")
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for pair in pairs:
        groups.setdefault((pair["prompt"], pair["dimension"]), []).append(pair)
    kept = []
    for group in groups.values():
        ranked = sorted(group, key=lambda pair: -pair["margin"])  # stable
        kept += [{k: v for k, v in pair.items() if k != "margin"} for pair in ranked[:per_prompt]]
    return kept
