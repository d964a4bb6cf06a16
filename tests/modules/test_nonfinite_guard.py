"""NonFiniteGuard: NaN rewards or losses skip the optimizer step; too many in a row stop the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from moslim_pl.callbacks import NonFiniteGuard
from moslim_pl.callbacks.nonfinite import NonFiniteError
from moslim_pl.data import PreferenceDataModule, SyntheticConfig
from moslim_pl.errors import MoslimError
from moslim_pl.modules import RewardModelModule, RLOOModule
from moslim_pl.modules.settings import OptimConfig, SamplingConfig
from moslim_pl.rollout import RewardOutput

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


class _Snapshots(Callback):
    """The weights at the end of every training step (copies): the policy's, or the whole module's."""

    def __init__(self, attribute: str | None = "policy") -> None:
        self.attribute = attribute
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        module = pl_module if self.attribute is None else getattr(pl_module, self.attribute)
        self.weights.append({k: v.detach().clone() for k, v in module.state_dict().items()})


def _nan_rewards_on(module: RLOOModule, steps: set[int]) -> None:
    """Make the training rollouts of the given 0-based steps score NaN."""
    score = module._score

    def patched(prompts, rollout) -> RewardOutput:
        out = score(prompts, rollout)
        if module.training and module.global_step in steps:
            out = out._replace(reward=torch.full_like(out.reward, float("nan")))
        return out

    module._score = patched  # type: ignore[method-assign]


def _rloo(formality_rm: Path) -> RLOOModule:
    seed_everything(0)
    return RLOOModule(
        policy="moslim/tiny-llama",
        tiny_config=TINY,
        reward_model=str(formality_rm),
        num_samples=2,
        sampling=SamplingConfig(max_new_tokens=4, max_prompt_length=32),
        optim=OptimConfig(learning_rate=1e-2),
    )


def test_nan_rewards_skip_the_step_and_are_counted(
    formality_prompts, read_logs, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    module = _rloo(formality_rm)
    _nan_rewards_on(module, {1, 2})
    snapshots = _Snapshots()
    trainer = rl_trainer(
        5,
        logger=TensorBoardLogger(tmp_path, name="guard"),
        log_every_n_steps=1,
        callbacks=[NonFiniteGuard(max_consecutive=3), snapshots],
    )
    with pytest.warns(UserWarning, match="NaN or infinite gradients"):
        trainer.fit(module, DataLoader(formality_prompts(0, 16, seed=0), batch_size=2))

    assert trainer.global_step == 5  # the run went on
    w = snapshots.weights
    for name in w[0]:
        assert torch.isfinite(w[-1][name]).all(), name
        assert torch.equal(w[0][name], w[1][name]) and torch.equal(w[1][name], w[2][name]), name
    assert any(not torch.equal(w[2][n], w[3][n]) for n in w[0])  # step 4 (finite) updated the policy
    scalars, _ = read_logs(tmp_path)
    assert scalars["train/nonfinite_steps"] == [0.0, 1.0, 2.0, 2.0, 2.0]


def test_too_many_in_a_row_stop_with_a_checkpoint_of_the_last_good_state(
    formality_prompts, rl_trainer, formality_rm: Path, tmp_path: Path
) -> None:
    module = _rloo(formality_rm)
    _nan_rewards_on(module, set(range(2, 100)))
    snapshots = _Snapshots()
    trainer = rl_trainer(10, callbacks=[NonFiniteGuard(max_consecutive=2, dirpath=str(tmp_path)), snapshots])
    with pytest.warns(UserWarning), pytest.raises(NonFiniteError, match="2 optimizer steps in a row") as err:
        trainer.fit(module, DataLoader(formality_prompts(0, 16, seed=0), batch_size=2))
    assert isinstance(err.value, MoslimError)  # the CLI prints it as one line
    path = tmp_path / "nonfinite-stop.ckpt"
    assert str(path) in str(err.value)
    checkpoint = torch.load(path, weights_only=True)
    last_good = snapshots.weights[1]  # the end of step 2; steps 3 and 4 were skipped
    assert len(snapshots.weights) == 3
    for name, value in last_good.items():
        assert torch.equal(checkpoint["state_dict"][f"policy.{name}"], value), name
    assert checkpoint["callbacks"]["NonFiniteGuard"] == {"skipped": 2, "in_a_row": 2}


def test_an_infinite_loss_skips_the_reward_model_step(rl_trainer) -> None:
    # automatic optimization: the guard sits between Lightning's backward and its optimizer step
    seed_everything(0)
    data = PreferenceDataModule(
        synthetic=SyntheticConfig(num_prompts=8, responses_per_prompt=2), batch_size=4
    )
    module = RewardModelModule(learning_rate=1e-2, max_length=64)
    step = module.training_step

    def infinite_on_step_1(batch, batch_idx):
        out = step(batch, batch_idx)
        if module.global_step == 1:
            out["loss"] = out["loss"] * float("inf")
        return out

    module.training_step = infinite_on_step_1  # type: ignore[method-assign]
    snapshots = _Snapshots(attribute=None)
    trainer = rl_trainer(3, logger=False, limit_val_batches=0, callbacks=[NonFiniteGuard(), snapshots])
    with pytest.warns(UserWarning, match="at step 1"):
        trainer.fit(module, datamodule=data)
    w = snapshots.weights
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert any(not torch.equal(w[1][k], w[2][k]) for k in w[0])
    assert all(torch.isfinite(v).all() for v in w[2].values() if v.is_floating_point())


def test_max_consecutive_must_be_positive() -> None:
    with pytest.raises(MoslimError, match="max_consecutive must be >= 1"):
        NonFiniteGuard(max_consecutive=0)
