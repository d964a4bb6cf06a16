"""Does a synthetic-world reward model count distinct topic keywords, or mentions?

    python benchmarks/rm_repeats.py RM_EXPORT [RM_EXPORT ...]

The oracle's helpfulness is the number of *distinct* keywords of the prompt's topic (``data/synthetic.py``).
A policy trained against an RM that counts mentions learns to repeat keywords (``docs/results.md``,
quickstart). For each RM export this scores held-out synthetic responses (``--prompts`` prompts of
``--seed``, 4 responses each, helpfulness >= 1) twice: as generated, and with ``repeat_rate 1`` (every
response mentions 1-4 of its keywords again; same oracle levels). It prints the helpfulness head's
accuracy and its mean expected level per true level for both. An RM that counts distinct keywords keeps
both rows alike; one that counts mentions reads the repeating responses higher.
"""

from __future__ import annotations

import argparse

import torch

from moslim_pl.data.synthetic import generate_rows
from moslim_pl.models.reward_model import MultiHeadRewardModel


def measure(rm: MultiHeadRewardModel, rows: list[dict]) -> tuple[float, dict[int, float]]:
    """(accuracy, mean expected class per true class) of the helpfulness head on ``rows``."""
    head = [d.name for d in rm.dimensions].index("helpfulness")
    with torch.no_grad():
        out = rm.score([r["prompt"] for r in rows], [r["response"] for r in rows])
    probs = out.probs[:, head]  # [N, L]
    true = torch.tensor([rm.dimensions[head].label_to_class(r["helpfulness"]) for r in rows])
    expected = (probs * torch.arange(probs.shape[-1], dtype=probs.dtype)).sum(-1)
    accuracy = float((probs.argmax(-1) == true).float().mean())
    return accuracy, {int(c): float(expected[true == c].mean()) for c in true.unique()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("exports", nargs="+", help="reward model export folders (synthetic world heads)")
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--seed", type=int, default=123, help="not a training seed of the quickstart (0-2)")
    args = parser.parse_args()
    for export in args.exports:
        rm = MultiHeadRewardModel.from_pretrained(export).eval()
        for rate in (0.0, 1.0):
            rows = [
                r for r in generate_rows(args.prompts, 4, args.seed, repeat_rate=rate) if r["helpfulness"]
            ]
            accuracy, by_level = measure(rm, rows)
            levels = " ".join(f"{level}: {value:.2f}" for level, value in by_level.items())
            print(
                f"{export}  repeat_rate {rate:.0f}: helpfulness acc {accuracy:.3f}; expected level by true level {levels}"
            )


if __name__ == "__main__":
    main()
