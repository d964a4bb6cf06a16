"""Lightning's own knobs through ``moslim-pl``: --optimizer, --lr_scheduler, accumulate_grad_batches, nested help."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from moslim_pl.cli import main
from moslim_pl.data.synthetic import DIMENSIONS
from moslim_pl.evaluation.tensorboard import read_scalars
from moslim_pl.models.backbone import load_backbone, load_tokenizer
from moslim_pl.models.reward_model import MultiHeadRewardModel
from moslim_pl.modules.optim import WarmupDecayLR

ROOT = Path(__file__).resolve().parents[2]
TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def test_warmup_decay_schedule() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    for decay, end in (("linear", 0.1), ("cosine", 0.1), ("constant", 1.0)):
        optimizer = torch.optim.SGD([param], lr=1.0)
        total = None if decay == "constant" else 12
        scheduler = WarmupDecayLR(optimizer, warmup_steps=2, total_steps=total, decay=decay, min_lr_ratio=0.1)
        factors = [scheduler.factor(s) for s in range(14)]
        assert factors[:3] == [1 / 3, 2 / 3, 1.0]  # the stages' own warm-up, then the peak
        assert factors[-1] == pytest.approx(end)
        if decay == "cosine":
            assert factors[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_rloo_with_sgd_cosine_and_accumulation_logs_lr_and_grad_norm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(sys, "argv", ["moslim-pl"])
    tokenizer = load_tokenizer("moslim/tiny-llama")
    rm = MultiHeadRewardModel(
        load_backbone("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=TINY),
        DIMENSIONS,
        tokenizer=tokenizer,
    )
    rm.save_pretrained(tmp_path / "rm")
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "policy" / "rloo_quickstart.yaml"),
            "--model.init_args.policy=moslim/tiny-llama",
            f"--model.init_args.reward_model={tmp_path / 'rm'}",
            f"--model.init_args.tiny_config={json.dumps(TINY)}",
            "--model.init_args.sampling.max_new_tokens=4",
            "--model.init_args.optim.warmup_steps=0",
            "--optimizer=torch.optim.SGD",
            "--optimizer.lr=0.01",
            "--lr_scheduler=moslim_pl.modules.optim.WarmupDecayLR",
            "--lr_scheduler.warmup_steps=1",
            "--lr_scheduler.total_steps=3",
            "--lr_scheduler.decay=cosine",
            "--trainer.accumulate_grad_batches=2",
            "--data.init_args.batch_size=4",
            "--trainer.max_steps=3",
            "--trainer.log_every_n_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks=[]",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    scalars = read_scalars(tmp_path / "runs")
    # 3 optimizer steps, each over 2 rollouts of 4 prompts: warm-up 1/2, then the cosine from the peak
    # (Lightning writes a step's value again with the next rollout of the same window: compare the changes)
    lrs = [v for i, v in enumerate(scalars["train/lr"]) if i == 0 or v != scalars["train/lr"][i - 1]]
    assert lrs == pytest.approx([0.005, 0.01, 0.005])
    assert scalars["train/grad_norm"] and all(v > 0 for v in scalars["train/grad_norm"])
    assert len(scalars["rollout/reward"]) == 6  # one per rollout


def test_nested_help_prints_the_lora_options(capsys: pytest.CaptureFixture) -> None:
    main(["fit", "--config", str(ROOT / "configs" / "reward_model" / "quickstart.yaml"), "--model.lora.help"])
    out = capsys.readouterr().out
    for option in ("--model.lora.r R", "--model.lora.alpha ALPHA", "--model.lora.target_modules"):
        assert option in out
