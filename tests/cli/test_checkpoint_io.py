"""The CLI's trainers write checkpoints with AtomicCheckpointIO."""

from __future__ import annotations

from moslim_pl.utils.checkpoint_io import AtomicCheckpointIO


def test_the_cli_trainer_writes_checkpoints_atomically() -> None:
    from moslim_pl.cli import MoslimCLI

    args = ["--model=moslim_pl.modules.RewardModelModule", "--data=moslim_pl.data.PreferenceDataModule"]
    args.append("--trainer.logger=false")
    cli = MoslimCLI(args=args, run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
