"""A hand-built "reward model" whose verbosity head reads only the answer's length: a diagnostic.

    python recipes/real_chat/length_rm.py OUT/length_rm [--thresholds 40 100] [--sharpness 1.0]

Training against it separates the two reasons the real-chat recipe can fail to teach ``<verbosity n>``:
the trained MiniLM reward model follows length weakly (docs/real_chat.md), or RL in the CPU budget cannot
teach a policy to condition on the prefix at all. This export gives the cleanest signal there is: no
training, one head ``verbosity`` (HelpSteer's 0-4 in 3 bins, as the recipe's data), whose levels are
cut at ``--thresholds`` tokens of the answer (the tiny word-level tokenizer: words and punctuation marks;
the prompt is not read, ``max_prompt_length`` 0).

How the weights make it (tested in tests/recipes/test_length_rm.py): every token embeds as ``e0`` in
``moslim_pl.models.handbuilt.embedding_readout_backbone``, so each position's final hidden state is
``RMSNorm(e0) = sqrt(H) * e0``; ``mean_sqrt`` pooling of ``n`` tokens gives ``sqrt(n * H) * e0``. The
head's logit of level ``l`` is ``a * (l * sqrt(n) - c_l)`` with ``c_0 = 0``, ``c_1 = sqrt(t1)``,
``c_2 = sqrt(t1) + sqrt(t2)``: levels 0 and 1 tie at ``n = t1`` tokens, 1 and 2 at ``n = t2``, and the
sharpness ``a`` sets how gradually the expected level moves between them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from moslim_pl.data.encoding import PairEncoding
from moslim_pl.models.handbuilt import embedding_readout_backbone
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.schema import Dimension

VERBOSITY = Dimension("verbosity", low=0, high=4, bins=3, default=1)
HIDDEN = 16


def length_reward_model(thresholds: tuple[float, float], sharpness: float) -> MultiHeadRewardModel:
    """The length-reading RM (module docstring); ``thresholds``: token counts of the level boundaries."""
    low, high = thresholds
    if not 0 < low < high:
        raise ValueError(f"thresholds must satisfy 0 < t1 < t2, got {thresholds}")
    if not sharpness > 0:
        raise ValueError(f"sharpness must be positive, got {sharpness}")
    backbone, tokenizer = embedding_readout_backbone(HIDDEN)
    rm = MultiHeadRewardModel(
        backbone,
        [VERBOSITY],
        pooling="mean_sqrt",
        tokenizer=tokenizer,
        encoding=PairEncoding(max_length=512, max_prompt_length=0),
    )
    offsets = torch.tensor([0.0, math.sqrt(low), math.sqrt(low) + math.sqrt(high)])
    with torch.no_grad():
        embeddings = backbone.get_input_embeddings().weight
        embeddings[:, 0] = 1.0
        head = rm.heads["verbosity"]
        head.weight.zero_()
        head.weight[:, 0] = sharpness * torch.arange(3.0) / math.sqrt(HIDDEN)
        head.bias.copy_(-sharpness * offsets)
    return rm.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the export folder to write")
    parser.add_argument("--thresholds", type=float, nargs=2, default=(40.0, 100.0), metavar=("T1", "T2"))
    parser.add_argument("--sharpness", type=float, default=1.0)
    args = parser.parse_args()
    length_reward_model(tuple(args.thresholds), args.sharpness).save_pretrained(args.out)
    sys.stdout.write(f"wrote {args.out}\n")


if __name__ == "__main__":
    main()
