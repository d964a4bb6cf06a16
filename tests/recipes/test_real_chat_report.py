"""recipes/real_chat/evaluate.py's report on hand-made sweeps: the JSON format, the PNGs, the examples."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from moslim_pl.evaluation.text_sweep import SweepRecord

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "real_chat" / "evaluate.py"


def _sweep(path: Path, words_per_level: dict[int, int]) -> None:
    records = []
    for dimension in ("verbosity", "complexity"):
        for level, words in words_per_level.items():
            for question in ("q1", "q2"):
                response = " ".join(["word"] * words) + "."
                records.append(
                    SweepRecord(
                        dimension, level, question, f"<{dimension} {level}> {question}", response, True,
                        words=words, grade=float(words), relevance=0.5,
                        rm_levels={"verbosity": float(words), "complexity": 1.0},
                    ).to_dict()
                )  # fmt: skip
    path.write_text(json.dumps({"policy": "p", "questions": 2, "seconds": 1.0, "records": records}))


def test_report_writes_the_documented_json_pngs_and_examples(
    tmp_path: Path, monkeypatch, load_script
) -> None:
    _sweep(tmp_path / "start.json", {0: 5, 1: 5, 2: 5})  # ignores the prefix
    _sweep(tmp_path / "trained.json", {0: 2, 1: 6, 2: 9})  # follows it
    argv = ["evaluate.py", "report", "--start", str(tmp_path / "start.json"), "--trained"]
    argv += [str(tmp_path / "trained.json"), "--out", str(tmp_path), "--minutes", "3.5"]
    monkeypatch.setattr(sys, "argv", argv)
    load_script(SCRIPT).main()
    result = json.loads((tmp_path / "real_chat.json").read_text())
    assert result["eval_prompts"] == 2 and result["minutes"] == 3.5
    for name in ("start", "trained"):
        assert set(result[name]) == {"spearman", "empty_rate", "no_eos_rate", "distinct2", "relevance"}
        assert set(result[name]["spearman"]) == {
            "verbosity_words", "complexity_grade", "rm/verbosity", "rm/complexity"
        }  # fmt: skip
    assert result["start"]["spearman"]["verbosity_words"] == 0.0  # constant: no ordering
    assert result["trained"]["spearman"]["verbosity_words"] == pytest.approx(1.0)
    assert result["trained"]["relevance"] == pytest.approx(0.5)
    pngs = sorted(p.name for p in tmp_path.glob("real_chat_*.png"))
    assert pngs == [
        "real_chat_complexity_grade.png", "real_chat_rm_complexity.png",
        "real_chat_rm_verbosity.png", "real_chat_verbosity_words.png",
    ]  # fmt: skip
    examples = (tmp_path / "examples.md").read_text()
    assert "## verbosity" in examples and "| 2 |" in examples and "*(9 words)*" in examples


def test_length_signal_scores_the_sweep_again_with_another_reward_model(
    tmp_path: Path, monkeypatch, capsys, formality_rm: Path, load_script
) -> None:
    # Answers of 1..4 formal markers: the hand-built RM's formality level grows with the share of markers
    # in prompt + answer, so with the prompt fixed it grows with the answer's length (rho +1 per question).
    # The stored levels say the opposite (rho -1), so only a fresh scoring prints +1.
    records = []
    for question in ("q1", "q2"):
        for words in range(1, 5):
            records.append(
                SweepRecord(
                    "formality", 0, question, f"<formality 0> {question}", " ".join(["moreover"] * words),
                    True, words=words, grade=0.0, relevance=0.5, rm_levels={"formality": float(-words)},
                ).to_dict()
            )  # fmt: skip
    sweep = tmp_path / "start.json"
    sweep.write_text(json.dumps({"policy": "p", "questions": 2, "seconds": 1.0, "records": records}))
    for extra, expected in (([], "-1.000"), (["--reward-model", str(formality_rm)], "1.000")):
        monkeypatch.setattr(sys, "argv", ["evaluate.py", "length-signal", str(sweep), *extra])
        load_script(SCRIPT).main()
        lines = capsys.readouterr().out.splitlines()
        formality = next(line for line in lines if line.startswith("formality"))
        assert formality.split()[-4] == expected and formality.endswith("over 2 questions")
