"""Mean and spread over seeds, by hand."""

from __future__ import annotations

import json
import math

import pytest

from moslim_pl.baselines.seeds import main, summarize
from moslim_pl.errors import MoslimError


def _row(rho: float, reward: float) -> dict:
    return {
        "dimensions": {"verbosity": {"spearman_oracle": rho, "hit_rate": 0.5}},
        "mean_rho": rho,
        "mean_reward": reward,
        "compute_hours": 0.1,
        "compute_tokens": 1000,
        "note": "text",
        "levels": [0.0, 1.0],
    }


def test_summarize_by_hand() -> None:
    trees = [{"m": _row(0.9, 1.0)}, {"m": _row(0.6, 2.0)}, {"m": _row(0.9, 3.0)}]
    out = summarize(trees, ["seed_0", "seed_1", "seed_2"])
    assert out["seeds"] == ["seed_0", "seed_1", "seed_2"]
    # rho 0.9, 0.6, 0.9: mean 0.8, sample variance (0.01 + 0.04 + 0.01) / 2 = 0.03
    assert out["mean"]["m"]["mean_rho"] == pytest.approx(0.8)
    assert out["std"]["m"]["mean_rho"] == pytest.approx(math.sqrt(0.03))
    assert (out["min"]["m"]["mean_rho"], out["max"]["m"]["mean_rho"]) == (0.6, 0.9)
    # reward 1, 2, 3: std 1; a constant has std 0; text is kept; lists element by element
    assert out["std"]["m"]["mean_reward"] == pytest.approx(1.0)
    assert out["std"]["m"]["dimensions"]["verbosity"]["hit_rate"] == 0.0
    assert out["mean"]["m"]["note"] == "text"
    assert out["max"]["m"]["levels"] == [0.0, 1.0]
    assert summarize([{"a": 2}])["std"] == {"a": 0.0}  # one seed: no spread


def test_summarize_refuses_other_shapes() -> None:
    with pytest.raises(MoslimError, match="m has other keys"):
        summarize([{"m": {"a": 1}}, {"m": {"b": 1}}])
    with pytest.raises(MoslimError, match="no result"):
        summarize([])


def test_main_writes_the_summary_and_the_tables(tmp_path, capsys) -> None:
    files = []
    for seed, rho in enumerate((0.9, 0.7)):
        folder = tmp_path / f"seed_{seed}"
        folder.mkdir()
        files.append(folder / "comparison.json")
        files[-1].write_text(json.dumps({"moslim": _row(rho, 1.0)}))
    main([*map(str, files), "--out", str(tmp_path / "comparison.json")])
    summary = json.loads((tmp_path / "comparison.json").read_text())
    assert summary["seeds"] == ["seed_0", "seed_1"] and summary["mean"]["moslim"][
        "mean_rho"
    ] == pytest.approx(0.8)
    printed = capsys.readouterr().out
    assert "mean over 2 seeds" in printed and "std over 2 seeds" in printed and "0.800" in printed
