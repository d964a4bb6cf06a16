"""Online-DPO on 2 CPU processes (torchrun, gloo) when only rank 1's pairs tie: no hang, no drift.

The backward pass is a collective under DDP (gradient all-reduce) and FSDP2 (reduce-scatter): a rank
that skipped it because all its pairs tied left the other waiting, or paired its gradients with the
wrong collective. One ``torchrun`` launch of ``online_dpo_ties_worker.py`` runs 2 steps under each
strategy (about 15 s on 2 busy cores); a hang fails on the timeouts instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("online_dpo_ties_worker.py")
STEPS = 2  # as in the worker


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("online_dpo_ties")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        done = subprocess.run(
            [*command, str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired as hang:
        pytest.fail(f"the 2-process Online-DPO run hung (killed after {hang.timeout} s)")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _metrics(out: Path, strategy: str) -> list[dict]:
    return [json.loads((out / f"{strategy}-rank{rank}.json").read_text()) for rank in range(2)]


def _weights(out: Path, name: str) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(out / f"{name}.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_both_ranks_step_when_only_rank_one_ties(out: Path, strategy: str) -> None:
    first, second = _metrics(out, strategy)
    assert first["global_step"] == second["global_step"] == STEPS
    # rank 0 trained on its pair, rank 1 logged its ties and no loss; no step had non-finite gradients
    assert first["metrics"]["train/tie_fraction"] == 0.0 and "train/loss" in first["metrics"]
    assert second["metrics"]["train/tie_fraction"] == 1.0 and "train/loss" not in second["metrics"]
    assert first["metrics"]["train/nonfinite_steps"] == second["metrics"]["train/nonfinite_steps"] == 0.0


def test_ddp_ranks_hold_the_same_weights_after_the_steps(out: Path) -> None:
    first, second = _weights(out, "ddp-rank0"), _weights(out, "ddp-rank1")
    assert first["final"].keys() == second["final"].keys()
    for key, value in first["final"].items():
        assert torch.equal(value, second["final"][key]), key
    # rank 0's valid pair moved every weight (through the all-reduce, on both ranks)
    assert all(not torch.equal(value, first["initial"][key]) for key, value in first["final"].items())


def test_fsdp2_reaches_the_weights_of_ddp(out: Path) -> None:
    # Same seeds, same rollouts, the same averaged gradients: the gathered FSDP2 policy is DDP's.
    fsdp2, ddp = _weights(out, "fsdp2-rank0"), _weights(out, "ddp-rank0")
    assert fsdp2["final"].keys() == ddp["final"].keys()
    for key, value in fsdp2["final"].items():
        torch.testing.assert_close(value, ddp["final"][key], msg=key)
