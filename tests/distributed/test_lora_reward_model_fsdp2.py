"""A LoRA reward model under FSDP2 on 2 CPU processes: the sharded adapters are gathered and merged on rank 0."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.modules import RewardModelModule

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fsdp2_lora_reward_model_exports_the_merged_checkpoint(tmp_path: Path) -> None:
    """About 25 s on 2 CPUs: the export scores like the module rebuilt from the last sharded checkpoint."""
    save_dir = tmp_path / "runs"
    done = subprocess.run(
        [
            sys.executable, "-m", "moslim_pl.cli", "fit",
            "--config", str(ROOT / "configs" / "reward_model" / "quickstart.yaml"),
            "--config", str(ROOT / "configs" / "trainer" / "fsdp2.yaml"),
            "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.enable_progress_bar=false",
            "--trainer.max_epochs=1", f"--trainer.logger.init_args.save_dir={save_dir}",
            "--data.init_args.synthetic.num_prompts=30", "--data.init_args.synthetic.responses_per_prompt=2",
            "--data.init_args.batch_size=8", "--model.init_args.lora={r: 4, target_modules: [q_proj, v_proj]}",
        ],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = save_dir.glob("*/version_0")
    dcp_to_torch_save(run / "checkpoints" / "last.ckpt", tmp_path / "full.pt")
    state = torch.load(tmp_path / "full.pt", map_location="cpu", weights_only=True)["state_dict"]
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())  # the datamodule's are in there too
    names = inspect.signature(RewardModelModule).parameters
    kwargs = {k: v for k, v in hparams.items() if k in names} | {"dimensions": DIMENSIONS}
    module = RewardModelModule(**kwargs)
    module.rm.load_state_dict({k.removeprefix("rm."): v for k, v in state.items() if k.startswith("rm.")})
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in state.items())  # the adapters trained

    exported = MultiHeadRewardModel.from_pretrained(run / "export")
    prompts = ["<verbosity 2> tell me about rivers .", "explain tides ."]
    responses = ["rivers flow .", "the moon pulls the sea . it is big ."]
    diff = (module.rm.score(prompts, responses).probs - exported.score(prompts, responses).probs).abs().max()
    assert float(diff) < 1e-5
