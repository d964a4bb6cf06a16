"""Mean and spread over seeds of results with one shape (``comparison.json``, ``granularity.json``,
``controllability.json``): a single run is not a verdict (``docs/paper_comparison.md``).

``summarize([tree_seed0, tree_seed1, ...])`` walks the trees in parallel; every number becomes, in the
tree of each statistic, its ``mean``, its sample standard deviation ``std`` (ddof 1; 0 for one seed),
its ``min`` and its ``max`` over the seeds; lists of numbers (a sweep's levels) are summarized element by
element, and anything else (text, ``None``) is kept from the first seed. The result is
``{"seeds": [labels], "mean": tree, "std": tree, "min": tree, "max": tree}``.

``python -m moslim_pl.baselines.seeds OUT/seed_*/comparison.json --out OUT/comparison.json`` writes it;
for comparison tables it prints the mean table, then the std table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moslim_pl.errors import MoslimError

STATISTICS = ("mean", "std", "min", "max")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _stats(values: Sequence[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "min": min(values), "max": max(values)}


def _walk(trees: Sequence[Any], where: str) -> dict[str, Any]:
    """``{statistic: subtree}`` for parallel subtrees ``trees`` (one per seed)."""
    first = trees[0]
    if _is_number(first):
        if not all(_is_number(t) for t in trees):
            raise MoslimError(f"seeds: {where or 'the top level'} is a number in one file and not in another")
        return _stats([float(t) for t in trees])
    if isinstance(first, dict):
        if any(not isinstance(t, dict) or set(t) != set(first) for t in trees):
            raise MoslimError(f"seeds: {where or 'the top level'} has other keys in one of the files")
        children = {key: _walk([t[key] for t in trees], f"{where}.{key}".lstrip(".")) for key in first}
        return {s: {key: child[s] for key, child in children.items()} for s in STATISTICS}
    if isinstance(first, list) and first and all(_is_number(v) for v in first):
        if any(not isinstance(t, list) or len(t) != len(first) for t in trees):
            raise MoslimError(f"seeds: {where} has another length in one of the files")
        columns = [_stats([float(t[i]) for t in trees]) for i in range(len(first))]
        return {s: [c[s] for c in columns] for s in STATISTICS}
    return dict.fromkeys(STATISTICS, first)


def summarize(trees: Sequence[Any], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Mean, std, min and max over seeds of trees of one shape (see the module docstring)."""
    if not trees:
        raise MoslimError("seeds: no result to summarize")
    return {"seeds": list(labels or range(len(trees))), **_walk(trees, "")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mean and spread of per-seed results")
    parser.add_argument("files", nargs="+", help="one JSON result per seed, all of one shape")
    parser.add_argument("--out", required=True, help="the summary JSON to write")
    args = parser.parse_args(argv)
    trees = [json.loads(Path(f).read_text()) for f in args.files]
    summary = summarize(trees, [str(Path(f).parent.name) for f in args.files])
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    first = next(iter(trees[0].values()), None) if isinstance(trees[0], dict) else None
    if isinstance(first, dict) and "mean_reward" in first:
        from moslim_pl.baselines.comparison import format_comparison

        for statistic in ("mean", "std"):
            sys.stdout.write(
                f"{statistic} over {len(trees)} seeds:\n{format_comparison(summary[statistic])}\n"
            )
    sys.stdout.write(f"wrote {args.out}\n")


if __name__ == "__main__":
    main()
