"""benchmarks/lora_memory.py runs (not a timing test): one RLOO step per variant on a tiny policy."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "lora_memory.py"
TINY = [
    "--model=tiny",
    "--tiny-hidden=64",
    "--tiny-layers=1",
    "--steps=1",
    "--max-new-tokens=4",
    "--lora-r=2",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lora_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_step_of_each_variant_in_process(bench, tmp_path: Path) -> None:
    """The subprocesses' work, in this process: inputs, one step each, the summary."""
    args = bench.parse_args(TINY)
    spec = bench.prepare(args, tmp_path)
    assert spec["tiny_config"]["hidden_size"] == 64 and Path(spec["rm"], "heads.safetensors").is_file()
    runs = []
    for variant in bench.VARIANTS:
        args.run = variant
        runs.append(bench.run(args, spec, tmp_path / variant))
        assert runs[-1]["peak_memory_bytes"] > 0 and runs[-1]["variant"] == variant
    full, lora = runs
    assert full["reference_param_bytes"] == full["policy_param_bytes"] > 0
    assert (
        lora["reference_param_bytes"] == 0
        and 0 < lora["trainable_param_bytes"] < full["trainable_param_bytes"]
    )
    # AdamW keeps two moments per trainable parameter
    assert full["optimizer_state_bytes"] == 2 * full["trainable_param_bytes"]
    summary = bench.summarize(runs)
    assert summary["expected_saving_bytes"] > full["reference_param_bytes"]
    assert summary["ratio_lora_over_full"] > 0


@pytest.mark.slow
def test_the_script_end_to_end(tmp_path: Path) -> None:
    """The real command: a preparing subprocess, then one subprocess per run (about 40 s on 2 CPUs)."""
    out = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), f"--json={out}", "--repeats=1", *TINY], check=True, timeout=600
    )
    report = json.loads(out.read_text())
    assert [r["variant"] for r in report["runs"]] == ["full", "lora"]
    assert report["summary"]["full"]["reference_param_bytes"] > 0
    assert report["summary"]["lora"]["reference_param_bytes"] == 0
