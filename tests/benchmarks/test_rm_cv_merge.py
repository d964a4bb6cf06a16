"""benchmarks/rm_cv.py --merge: settings run in separate processes become one report (hand-computed summary)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _rm_cv():
    spec = importlib.util.spec_from_file_location("rm_cv", BENCHMARKS / "rm_cv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(path: Path, folds: dict) -> Path:
    path.write_text(json.dumps({"args": {}, "folds": folds, "summary": {}}))
    return path


def test_merge_summarizes_settings_from_several_reports(tmp_path: Path) -> None:
    rm_cv = _rm_cv()
    a = _report(
        tmp_path / "a.json",
        {"ce": [{"helpfulness": 0.5, "verbosity": 0.7}, {"helpfulness": 0.7, "verbosity": 0.9}]},
    )
    b = _report(tmp_path / "b.json", {"trl": [{"helpfulness": 0.6}, {"helpfulness": 0.8}]})
    out = tmp_path / "merged.json"
    rm_cv.main(["--merge", str(a), str(b), "--json", str(out)])
    summary = json.loads(out.read_text())["summary"]
    # ce: per-fold means over heads 0.6 and 0.8 -> mean 0.7, sample std sqrt(0.02) = 0.1414
    assert summary["ce"]["mean_over_heads"] == pytest.approx(0.7)
    assert summary["ce"]["std_over_folds"] == pytest.approx(0.02**0.5)
    assert summary["ce"]["per_head_mean"]["verbosity"] == pytest.approx(0.8)
    assert summary["trl"]["per_head_mean"]["helpfulness"] == pytest.approx(0.7)
    assert summary["trl"]["folds"] == 2


def test_merge_refuses_a_setting_in_two_reports(tmp_path: Path) -> None:
    rm_cv = _rm_cv()
    a = _report(tmp_path / "a.json", {"ce": [{"helpfulness": 0.5}]})
    b = _report(tmp_path / "b.json", {"ce": [{"helpfulness": 0.6}]})
    with pytest.raises(SystemExit, match="'ce' is in more than one"):
        rm_cv.main(["--merge", str(a), str(b)])
