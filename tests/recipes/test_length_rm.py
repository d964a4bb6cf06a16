"""recipes/real_chat/length_rm.py: the hand-built RM's verbosity head reads the answer's token count."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from moslim_pl.models.reward_model import MultiHeadRewardModel

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "real_chat" / "length_rm.py"


def _probs(n: int, t1: float, t2: float, a: float) -> torch.Tensor:
    """By hand: logits a * (l * sqrt(n) - c_l), c = (0, sqrt(t1), sqrt(t1) + sqrt(t2))."""
    s = math.sqrt(n)
    logits = torch.tensor([0.0, a * (s - math.sqrt(t1)), a * (2 * s - math.sqrt(t1) - math.sqrt(t2))])
    return logits.softmax(-1)


def test_the_export_reads_only_the_answers_token_count(tmp_path: Path, monkeypatch, load_script) -> None:
    monkeypatch.setattr(sys, "argv", ["length_rm.py", str(tmp_path / "rm"), "--thresholds", "4", "9"])
    load_script(SCRIPT).main()
    rm = MultiHeadRewardModel.from_pretrained(tmp_path / "rm").eval()
    # The tiny tokenizer encodes "" [SEP] answer [EOS] (the prompt is cut to 0 tokens): n = words + 2; an
    # empty answer encodes to no token at all (n = 0: the pooled vector is 0, logits -a * c_l).
    answers = ["", "one two", "one two three four five", " ".join(["word"] * 20)]
    prompts = ["a short question", "a much longer question with many words in it", "q", "q ?"]
    with torch.no_grad():
        probs = rm.score(["<verbosity 0> " + p for p in prompts], answers).probs[:, 0]
    expected = torch.stack([_probs(len(a.split()) + 2 if a else 0, 4.0, 9.0, 1.0) for a in answers])
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    levels = (probs * torch.arange(3.0)).sum(-1)
    assert levels.tolist() == sorted(levels.tolist()) and levels[-1] > 1.5 > 0.5 > levels[0]


def test_bad_thresholds_are_refused(load_script) -> None:
    module = load_script(SCRIPT)
    with pytest.raises(ValueError, match="0 < t1 < t2"):
        module.length_reward_model((9.0, 4.0), 1.0)
    with pytest.raises(ValueError, match="sharpness must be positive"):
        module.length_reward_model((4.0, 9.0), 0.0)
