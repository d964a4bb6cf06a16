"""FSDP2 helpers on 2 CPU processes (torchrun, gloo): lockstep generation, gathered exports, LoRA merges.

One ``torchrun`` launch runs every check of ``sharding_worker.py`` (about 30 s on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("sharding_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("sharding")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [*command, str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


def test_sharded_greedy_generation_matches_the_unsharded_model(ranks):
    for rank in ranks:
        assert rank["generation"]["is_sharded"]
        assert rank["generation"]["greedy_matches_unsharded"]


def test_generation_keeps_the_ranks_in_lockstep(ranks):
    # Rank 0's rows all end at the first token, rank 1's run to max_new_tokens=6: rank 0 keeps decoding
    # (masked) pad tokens until rank 1 is done, so both made 6 forward passes.
    first, second = (rank["generation"] for rank in ranks)
    assert first["early_width"] == second["early_width"] == 6
    assert first["early_lengths"] == [1] * 6
    assert second["early_lengths"] == [6] * 6


def test_export_gathers_the_full_weights_on_rank_zero(ranks):
    first, second = (rank["export"] for rank in ranks)
    assert first["gathered_keys"] > 0 and second["gathered_keys"] == 0
    assert first["gathered_matches"] and first["reloaded_matches"]


def test_lora_merge_of_a_sharded_policy_matches_the_unsharded_merge(ranks):
    assert ranks[0]["lora"]["merged_matches"]
