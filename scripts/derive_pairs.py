"""Turn pointwise rated rows (HelpSteer-style JSONL) into a within-prompt preference-pair file.

    python scripts/derive_pairs.py rows.jsonl pairs.jsonl --dimensions verbosity complexity [--per-prompt 1]

Two responses to one prompt whose labels differ on a dimension make a pair judged on that dimension, the
higher label chosen (``moslim_pl.data.pairs.within_prompt_pairs``); ``--per-prompt N`` keeps the N pairs of
largest label gap per (prompt, dimension). The output rows are ``{"prompt", "chosen", "rejected",
"dimension"}``: a second source of ``PreferenceDataModule`` with ``pair_dimension_column: dimension``,
next to the pointwise file (``loss = CE + pair_loss_weight * BT``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moslim_pl.data.pairs import largest_gaps, within_prompt_pairs
from moslim_pl.utils.io import atomic_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", type=Path, help="pointwise JSONL with prompt, response and label columns")
    parser.add_argument("out", type=Path, help="the pair JSONL to write")
    parser.add_argument("--dimensions", nargs="+", required=True, help="label columns to pair on")
    parser.add_argument("--per-prompt", type=int, default=None, help="keep the N widest pairs per head")
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--response-column", default="response")
    args = parser.parse_args()
    try:
        lines = args.rows.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        sys.exit(f"derive_pairs: cannot read {args.rows}: {err.strerror}")
    rows = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                sys.exit(f"derive_pairs: {args.rows} line {number} is not JSON: {err.msg}")
    try:
        pairs = within_prompt_pairs(rows, args.dimensions, args.prompt_column, args.response_column)
    except KeyError as err:
        sys.exit(f"derive_pairs: a row of {args.rows} has no column {err}")
    if args.per_prompt is not None:
        if args.per_prompt < 1:
            sys.exit(f"derive_pairs: --per-prompt must be at least 1, got {args.per_prompt}")
        pairs = largest_gaps(pairs, args.per_prompt)
    else:
        pairs = [{k: v for k, v in pair.items() if k != "margin"} for pair in pairs]
    with atomic_file(args.out) as tmp:
        tmp.write_text(
            "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs), encoding="utf-8"
        )
    sys.stdout.write(f"{len(pairs)} pairs from {len(rows)} rows -> {args.out}\n")


if __name__ == "__main__":
    main()
