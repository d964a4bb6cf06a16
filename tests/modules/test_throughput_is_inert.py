"""The logging added for people (throughput, text samples through callbacks/media.py) changes neither the
training math nor the random numbers: the same policy, bit for bit, and the same RNG state afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from moslim_pl.callbacks.throughput import ThroughputCallback
from moslim_pl.modules import RLOOModule
from moslim_pl.modules.settings import OptimConfig, SamplingConfig


def _fit(formality_prompts, rl_trainer, formality_rm: Path, tmp_path: Path, logged: bool) -> tuple:
    seed_everything(0)
    module = RLOOModule(
        reward_model=str(formality_rm),
        num_samples=2,
        log_samples_every_n_steps=1 if logged else None,
        sampling=SamplingConfig(max_new_tokens=4, max_prompt_length=32),
        optim=OptimConfig(learning_rate=1e-2),
    )
    loggers = [TensorBoardLogger(tmp_path / "tb"), CSVLogger(tmp_path / "csv")] if logged else False
    trainer = rl_trainer(3, logger=loggers, log_every_n_steps=1)
    trainer.fit(module, DataLoader(formality_prompts(0, 6, seed=0), batch_size=2))
    assert any(isinstance(c, ThroughputCallback) for c in trainer.callbacks)
    if logged:
        assert "train/tokens_per_s" in trainer.callback_metrics
    weights = torch.cat([p.detach().flatten() for p in module.policy.parameters()])
    return weights, torch.get_rng_state(), torch.rand(1)


def test_logging_for_people_changes_no_weight_and_no_random_number(
    formality_prompts, rl_trainer, formality_rm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = _fit(formality_prompts, rl_trainer, formality_rm, tmp_path / "a", logged=True)
    for hook in ("on_train_batch_start", "on_train_batch_end"):  # the callback off entirely
        monkeypatch.setattr(ThroughputCallback, hook, lambda *args, **kwargs: None)
    silent = _fit(formality_prompts, rl_trainer, formality_rm, tmp_path / "b", logged=False)
    assert torch.equal(logged[0], silent[0])
    assert torch.equal(logged[1], silent[1]) and torch.equal(logged[2], silent[2])
