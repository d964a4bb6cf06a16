"""The ``moslim-pl`` command: a LightningCLI over every stage (``fit``, ``validate``, ``test``, ``predict``).

Models and datamodules are chosen with ``class_path`` in YAML (``--model RewardModelModule``), so
one command serves the reward-model, SFT and policy stages. A user error (bad data, config, prefix
or model) ends with one ``moslim-pl: error: ...`` line and exit code 2; set ``MOSLIM_DEBUG=1`` to
see the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import transformers
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from moslim_pl.errors import MoslimError
from moslim_pl.models.io import AtomicCheckpointIO

_NOISE = ("Does not validate against", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")


def one_line_parser_error(message: str) -> str:
    """jsonargparse's nested, multi-line error as one line: the key, then the specific complaints."""
    parts = []
    for line in message.splitlines():
        line = line.strip().removeprefix("- ").strip()
        if line and not line.startswith(_NOISE):
            parts.append(line)
    return " ".join(parts)


class OneLineErrorParser(LightningArgumentParser):
    """Lightning's parser, reporting a bad command line or config in one line instead of the whole usage
    text (``MOSLIM_DEBUG=1``: jsonargparse's own report)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if os.environ.get("MOSLIM_DEBUG") or not self.exit_on_error:
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"moslim-pl: error: {one_line_parser_error(message)} (options: {prog} --help)\n")
        raise SystemExit(2)


class MoslimCLI(LightningCLI):
    """LightningCLI with subclass mode for models and data and an overwritable saved config."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", OneLineErrorParser)
        super().__init__(
            LightningModule,
            LightningDataModule,
            *args,
            subclass_mode_model=True,
            subclass_mode_data=True,
            **kwargs,
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's trainer, writing checkpoints atomically where it writes them as single files."""
        trainer = super().instantiate_trainer(**kwargs)
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own plugin
            strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        # before LightningCLI reads the checkpoint's hyperparameters, which fails with a traceback
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_ckpt_path(self.config[subcommand].get("ckpt_path"))


_SPECIAL_CKPT_PATHS = ("last", "best", "hpc")


def check_ckpt_path(ckpt_path: str | None) -> None:
    """A local ``ckpt_path`` must be a file that ``torch.save`` wrote (a zip archive) or a folder (a
    sharded checkpoint of FSDP/FSDP2); names Lightning resolves itself (``last``, ``best``, ``hpc``,
    ``registry...``) and URLs are left to Lightning."""
    if not ckpt_path or ckpt_path in _SPECIAL_CKPT_PATHS or ckpt_path.startswith("registry"):
        return
    if "://" in ckpt_path:
        return
    path = Path(ckpt_path).expanduser()
    if path.is_dir():  # a distributed checkpoint: Lightning's strategy reads and checks it
        return
    if not path.is_file():
        raise MoslimError(f"ckpt_path {ckpt_path!r}: no such file")
    if not zipfile.is_zipfile(path):
        raise MoslimError(f"ckpt_path {ckpt_path!r} is not a checkpoint (not a torch.save archive)")


def _user_error(err: BaseException) -> MoslimError | None:
    """The ``MoslimError`` behind ``err``: itself, or one that jsonargparse wrapped while it built the
    model or datamodule from the config (it re-raises a ``ValueError`` chained to the original)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, MoslimError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``moslim-pl`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # per-file progress bars of weight loading and saving would drown the training log
    transformers.utils.logging.disable_progress_bar()
    try:
        MoslimCLI(args=args)
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None or os.environ.get("MOSLIM_DEBUG"):
            raise
        sys.stderr.write(f"moslim-pl: error: {user_error}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
