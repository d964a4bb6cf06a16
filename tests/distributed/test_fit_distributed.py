"""The real CLI with the trainer presets on 2 CPU processes (gloo): DDP and FSDP2 (ModelParallelStrategy).

Each run is a ``python -m moslim_pl.cli`` subprocess (Lightning launches the second rank), so the YAML
presets are exercised as users compose them. The full quickstart comparisons are slow (minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moslim_pl.evaluation.tensorboard import read_scalars
from moslim_pl.models.backbone import load_causal_lm
from moslim_pl.models.reward_model import MultiHeadRewardModel

ROOT = Path(__file__).resolve().parents[2]
RM_CONFIG = ROOT / "configs" / "reward_model" / "quickstart.yaml"
SFT_CONFIG = ROOT / "configs" / "sft" / "quickstart.yaml"
RLOO_CONFIG = ROOT / "configs" / "policy" / "rloo_quickstart.yaml"
HEADS = ("verbosity", "formality", "helpfulness")
TWO_CPUS = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.enable_progress_bar=false"]
SMALL_RM = [
    "--data.init_args.synthetic.num_prompts=30",
    "--data.init_args.synthetic.responses_per_prompt=2",
    "--data.init_args.batch_size=8",
]
TOLERANCE = 0.05  # val accuracy of a head, multi-process vs single-process quickstart


def preset(name: str) -> list[str]:
    return ["--config", str(ROOT / "configs" / "trainer" / f"{name}.yaml")]


def cli(*args: str, timeout: int = 1200) -> float:
    """Run ``moslim-pl`` in a subprocess; returns its wall time in seconds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "moslim_pl.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return time.perf_counter() - start


def only_run(save_dir: Path) -> Path:
    (name,) = [p for p in save_dir.iterdir() if p.is_dir()]
    (run,) = (save_dir / name).iterdir()
    return run


def checkpoint_state(checkpoint: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The model weights of a Lightning checkpoint, a sharded (FSDP2) folder or one file."""
    if checkpoint.is_dir():
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        dcp_to_torch_save(checkpoint, tmp_path / "full.pt")
        checkpoint = tmp_path / "full.pt"
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def assert_export_matches(export: MultiHeadRewardModel | torch.nn.Module, state: dict, prefix: str) -> None:
    exported = export.state_dict()
    assert exported, "empty export"
    for key, value in exported.items():
        assert torch.equal(value, state[prefix + key]), key


def test_fsdp2_reward_model_exports_the_gathered_weights(tmp_path):
    """Smoke test of configs/trainer/fsdp2.yaml on 2 CPU processes (about 30 s)."""
    save_dir = tmp_path / "runs"
    seconds = cli(
        "fit", "--config", str(RM_CONFIG), *preset("fsdp2"), *TWO_CPUS, *SMALL_RM,
        "--trainer.max_epochs=1", f"--trainer.logger.init_args.save_dir={save_dir}",
    )  # fmt: skip
    run = only_run(save_dir)
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2, "one shard per rank"
    scalars = read_scalars(run)
    assert {f"val/acc/{head}" for head in HEADS} <= set(scalars)
    rm = MultiHeadRewardModel.from_pretrained(run / "export")
    assert rm.stats_count.item() > 0
    # the export is the gathered model of the last checkpoint (which carries the re-estimated stats)
    assert_export_matches(rm, checkpoint_state(last, tmp_path), "rm.")
    print(f"FSDP2 RM smoke: {seconds:.0f} s")


@pytest.mark.slow
def test_fsdp2_resumes_from_its_sharded_checkpoint(tmp_path):
    common = ["--config", str(RM_CONFIG), *preset("fsdp2"), *TWO_CPUS, *SMALL_RM]
    cli("fit", *common, "--trainer.max_epochs=1", f"--trainer.logger.init_args.save_dir={tmp_path / 'a'}")
    first = only_run(tmp_path / "a")
    steps = json.loads((first / "compute.json").read_text())["optimizer_steps"]
    cli(
        "fit", *common, "--trainer.max_epochs=2", f"--trainer.logger.init_args.save_dir={tmp_path / 'b'}",
        f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
    )  # fmt: skip
    second = only_run(tmp_path / "b")
    assert json.loads((second / "compute.json").read_text())["optimizer_steps"] == 2 * steps
    # only the second epoch ran after the resume: one validation per head
    assert len(read_scalars(second)["val/acc/verbosity"]) == 1


@pytest.fixture(scope="module")
def quickstart_runs(tmp_path_factory) -> dict[str, tuple[dict[str, float], float]]:
    """The full RM quickstart single-process, under DDP and under FSDP2: last val acc per head, seconds."""
    results = {}
    for mode in ("single", "ddp", "fsdp2"):
        save_dir = tmp_path_factory.mktemp(mode)
        extra = [] if mode == "single" else [*preset(mode), *TWO_CPUS]
        seconds = cli(
            "fit", "--config", str(RM_CONFIG), *extra, "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={save_dir}",
        )  # fmt: skip
        scalars = read_scalars(only_run(save_dir))
        results[mode] = ({head: scalars[f"val/acc/{head}"][-1] for head in HEADS}, seconds)
        print(f"{mode}: {results[mode][0]} in {seconds:.0f} s")
    return results


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_quickstart_accuracy_holds_on_two_processes(quickstart_runs, mode):
    single, _ = quickstart_runs["single"]
    accuracy, _ = quickstart_runs[mode]
    for head in HEADS:
        assert accuracy[head] >= 0.9, (mode, head, accuracy)
        assert abs(accuracy[head] - single[head]) <= TOLERANCE, (mode, head, accuracy, single)


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory) -> Path:
    """An untrained tiny RM export: RLOO only needs rewards to flow, not good ones."""
    from moslim_pl.data.synthetic import DIMENSIONS
    from moslim_pl.models.backbone import load_backbone, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer("moslim/tiny-llama")
    config = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    backbone = load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=config)
    folder = tmp_path_factory.mktemp("rm") / "export"
    MultiHeadRewardModel(backbone, DIMENSIONS, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_rloo_steps_under_fsdp2(tiny_rm, tmp_path):
    save_dir = tmp_path / "runs"
    steps = 3
    seconds = cli(
        "fit", "--config", str(RLOO_CONFIG), *preset("fsdp2"), *TWO_CPUS,
        "--model.policy=moslim/tiny-llama",
        '--model.tiny_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, '
        '"intermediate_size": 64}',
        f"--model.reward_model={tiny_rm}", "--model.sampling.max_new_tokens=8", "--model.num_samples=2",
        "--data.init_args.batch_size=2", "--data.init_args.eval_batch_size=2",
        f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}", "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1",
        f"--trainer.logger.init_args.save_dir={save_dir}",
    )  # fmt: skip
    run = only_run(save_dir)
    scalars = read_scalars(run)
    assert len(scalars["rollout/reward"]) == steps and "val/reward" in scalars
    policy = load_causal_lm(str(run / "export"))
    assert_export_matches(policy, checkpoint_state(run / "checkpoints" / "last.ckpt", tmp_path), "policy.")
    print(f"RLOO under FSDP2: {steps} steps, rollout/reward {scalars['rollout/reward']}, {seconds:.0f} s")


@pytest.mark.slow
def test_sft_under_fsdp2_exports_a_causal_lm(tmp_path):
    save_dir = tmp_path / "runs"
    cli(
        "fit", "--config", str(SFT_CONFIG), *preset("fsdp2"), *TWO_CPUS,
        "--data.init_args.synthetic.num_prompts=30", "--data.init_args.synthetic.responses_per_prompt=2",
        "--trainer.max_epochs=1", f"--trainer.logger.init_args.save_dir={save_dir}",
    )  # fmt: skip
    run = only_run(save_dir)
    lm = load_causal_lm(str(run / "export"))
    assert_export_matches(lm, checkpoint_state(run / "checkpoints" / "last.ckpt", tmp_path), "lm.")


@pytest.mark.slow
def test_rloo_resumes_mid_epoch_under_fsdp2(tiny_rm, tmp_path):
    # The prompt sampler shards itself across ranks; Lightning's wrapper used to index past the end of a
    # resumed (shorter) pass. Resuming at step 2 must run steps 3 and 4, exactly as a straight run does.
    common = [
        "--config", str(RLOO_CONFIG), *preset("fsdp2"), *TWO_CPUS,
        "--model.policy=moslim/tiny-llama", f"--model.reward_model={tiny_rm}", "--model.sampling.max_new_tokens=8",
        "--model.num_samples=2",
        '--model.tiny_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, '
        '"intermediate_size": 64}',
        "--data.init_args.batch_size=2", "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1", "--model.log_samples_every_n_steps=1",
    ]  # fmt: skip
    cli("fit", *common, "--trainer.max_steps=2", f"--trainer.logger.init_args.save_dir={tmp_path / 'a'}")
    first = only_run(tmp_path / "a")
    cli(
        "fit", *common, "--trainer.max_steps=4", f"--trainer.logger.init_args.save_dir={tmp_path / 'b'}",
        f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
    )  # fmt: skip
    second = only_run(tmp_path / "b")
    assert json.loads((second / "compute.json").read_text())["optimizer_steps"] == 4
    resumed = read_scalars(second)
    assert len(resumed["rollout/reward"]) == 2  # steps 3 and 4 only
    # every rank's RNG state travels in the checkpoint (RNGStateCallback), so the resumed steps sample
    # exactly the rollouts of a straight run
    cli("fit", *common, "--trainer.max_steps=4", f"--trainer.logger.init_args.save_dir={tmp_path / 'c'}")
    straight = read_scalars(only_run(tmp_path / "c"))
    assert resumed["rollout/reward"] == straight["rollout/reward"][2:]
    for key in (k for k in straight if k.startswith("val/")):
        assert resumed[key][-1] == straight[key][-1], key
