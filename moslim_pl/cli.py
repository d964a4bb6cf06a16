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

import transformers
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from moslim_pl.errors import MoslimError


class MoslimCLI(LightningCLI):
    """LightningCLI with subclass mode for models and data and an overwritable saved config."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            LightningModule,
            LightningDataModule,
            *args,
            subclass_mode_model=True,
            subclass_mode_data=True,
            **kwargs,
        )


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
