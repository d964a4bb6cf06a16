"""Synthetic helpfulness pairs against keyword repeats: more distinct keywords beat more mentions.

    python benchmarks/repeat_pairs.py OUT.jsonl [--prompts 300] [--per-prompt 2] [--seed 0]

For each of ``generate_prompts(prompts, seed)`` (the quickstart RM's prompts), ``--per-prompt`` pairs
judged on helpfulness: the chosen response has helpfulness level ``h + 1`` (``h`` in 1..2) and mentions
no keyword twice; the rejected one has level ``h`` and repeats 1-4 of its keywords, so it often mentions
as many keywords as the chosen one or more. The rows (``prompt``, ``chosen``, ``rejected``,
``dimension``) are a second source of the quickstart RM (``pair_dimension_column: dimension``), to teach
it that the oracle counts distinct keywords (docs/results.md, quickstart).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from moslim_pl.data.synthetic import DIMENSIONS, generate_prompts, generate_response, topic_of


def repeat_pairs(prompts: int, per_prompt: int, seed: int) -> list[dict]:
    """The pair rows (module docstring); the same arguments give the same rows."""
    rng, repeats = random.Random(7 + 2 * seed), random.Random(8 + 2 * seed)  # seed 0: the measured file
    levels = {d.name: range(d.min_level, d.max_level + 1) for d in DIMENSIONS}
    rows = []
    for prompt in generate_prompts(prompts, seed):
        topic = topic_of(prompt)
        for _ in range(per_prompt):
            low = rng.choice([1, 2])
            rest = {name: rng.choice(levels[name]) for name in ("verbosity", "formality")}
            chosen = generate_response(topic, {**rest, "helpfulness": low + 1}, rng)
            rejected = generate_response(topic, {**rest, "helpfulness": low}, rng, 0.0, 1.0, repeats)
            rows.append(
                {"prompt": prompt, "chosen": chosen, "rejected": rejected, "dimension": "helpfulness"}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--per-prompt", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = repeat_pairs(args.prompts, args.per_prompt, args.seed)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"{len(rows)} pairs -> {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
