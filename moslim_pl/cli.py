"""The ``moslim-pl`` command: a LightningCLI over every stage (``fit``, ``validate``, ``test``, ``predict``).

Models and datamodules are chosen with ``class_path`` in YAML (``--model RewardModelModule``), so
one command serves the reward-model, SFT and policy stages. A user error (bad data, config, prefix
or model) ends with one ``moslim-pl: error: ...`` line and exit code 2; set ``MOSLIM_DEBUG=1`` to
see the traceback.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
import re
import sys
import typing
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import MethodType
from typing import Any, NoReturn

import torch
import transformers
import yaml
from jsonargparse import ArgumentParser
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, instantiate_class

import moslim_pl.callbacks as callbacks
import moslim_pl.data as data
import moslim_pl.modules as modules
from moslim_pl.callbacks.progress import fix_epoch_display
from moslim_pl.data.schemas import SCHEMAS
from moslim_pl.errors import MoslimError
from moslim_pl.modules.optim import WarmupDecayLR
from moslim_pl.rewards.mapping import AGGREGATIONS, MAPPINGS
from moslim_pl.utils.checkpoint_io import AtomicCheckpointIO

log = logging.getLogger(__name__)

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

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.epilog = names_epilog()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's trainer, writing checkpoints atomically where it writes them as single files, its
        Rich progress bar reading ``Epoch N (max_steps M)`` on ``max_steps`` runs (not ``Epoch N/-2``)."""
        trainer = super().instantiate_trainer(**kwargs)
        fix_epoch_display(trainer)
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own plugin
            strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """``--optimizer`` and ``--lr_scheduler`` for every stage (see :func:`install_optimizer`), instead of
        Lightning's version, which builds the optimizer at parse time over every parameter (a reward model
        built in ``configure_model`` has none yet; frozen models would join) and ignores a scheduler
        given without an optimizer."""
        config = self.config_init.get(subcommand) if subcommand else self.config_init
        if config is None:
            return
        install_optimizer(self.model, config.get("optimizer"), config.get("lr_scheduler"))

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        super().parse_arguments(parser, args)
        # before LightningCLI reads the checkpoint's hyperparameters, which fails with a traceback
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_ckpt_path(self.config[subcommand].get("ckpt_path"))
            argv = sys.argv[1:] if args is None else args
            if subcommand == "fit" and isinstance(argv, (list, tuple)):  # the three matter when training
                warn_lost_callbacks(argv, self.config[subcommand])


_OWN_RATES = {
    "value_learning_rate": "the critic's own learning rate",
    "head_learning_rate": "the heads' own learning rate",
}


def install_optimizer(model: LightningModule, optimizer_init: Any | None, scheduler_init: Any | None) -> None:
    """Replace ``model.configure_optimizers`` so that ``--optimizer`` (a ``torch.optim`` class with its
    options) and/or ``--lr_scheduler`` apply (``docs/user_guide.md``, "Lightning's own knobs").

    The optimizer is built when training starts, over the trainable parameters only (frozen reference
    and reward models stay out); without ``--lr_scheduler`` the stage's own linear warm-up
    (``model.warmup_steps``) still applies. Without ``--optimizer``, the stage's own AdamW (no decay on
    biases and norms, per-group rates) gets the given scheduler. Schedulers step with every optimizer
    step. One-line refusals where the two cannot combine: a stage's own second learning rate
    (``value_learning_rate``, ``head_learning_rate``) with ``--optimizer``, ``warmup_steps > 0`` with
    ``--lr_scheduler`` (put the warm-up in the scheduler: ``moslim_pl.modules.optim.WarmupDecayLR``).
    """
    if not optimizer_init and not scheduler_init:
        return
    hparams = getattr(model, "hparams", {})
    if optimizer_init:
        for name, what in _OWN_RATES.items():
            if hparams.get(name) is not None:
                raise MoslimError(
                    f"--optimizer replaces the stage's AdamW, which sets {what} ({name}={hparams[name]}): "
                    f"unset --model.{name} or drop --optimizer"
                )
    # the policy stages keep it in their optim group (moslim_pl.modules.settings), the others flat
    optim = hparams.get("optim")
    key = "optim.warmup_steps" if isinstance(optim, dict) else "warmup_steps"
    warmup = int((optim if isinstance(optim, dict) else hparams).get("warmup_steps", 0) or 0)
    if scheduler_init and warmup > 0:
        raise MoslimError(
            f"--lr_scheduler replaces the stage's warm-up ({key}={warmup}): set --model.{key} 0 and "
            "the warm-up in the scheduler (moslim_pl.modules.optim.WarmupDecayLR --lr_scheduler.warmup_steps N)"
        )
    own = model.configure_optimizers

    def configure_optimizers(module: LightningModule) -> dict[str, Any]:
        if optimizer_init:
            trainable = [p for p in module.parameters() if p.requires_grad]
            optimizer = instantiate_class(trainable, optimizer_init)
        else:
            optimizer = own()["optimizer"]
        if scheduler_init:
            scheduler = instantiate_class(optimizer, scheduler_init)
        else:
            scheduler = WarmupDecayLR(optimizer, warmup_steps=warmup)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "step"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config.update(interval="epoch", monitor=getattr(scheduler, "monitor", "val/loss"))
        return {"optimizer": optimizer, "lr_scheduler": config}

    model.configure_optimizers = MethodType(configure_optimizers, model)


def names_epilog() -> str:
    """The names ``--help`` lists below the options (``docs/user_guide.md``, "Finding options"): dataset
    schemas, reward mappings and aggregations, and the short class names LightningCLI resolves."""

    def names(module: Any, base: type) -> str:
        return ", ".join(n for n in module.__all__ if _is_subclass(getattr(module, n), base))

    return (
        f"Dataset schemas (--data.source.schema): {', '.join(sorted(SCHEMAS))}. "
        f"Reward mappings (--model.reward.mapping): {', '.join(MAPPINGS)}. "
        f"Aggregations (--model.reward.aggregation): {', '.join(AGGREGATIONS)} (softmin:<temperature>). "
        f"Short class names: --model {names(modules, LightningModule)}; "
        f"--data {names(data, LightningDataModule)}; "
        f"--trainer.callbacks+= {names(callbacks, Callback)} (and Lightning's own). "
        "A class's options: --model.help CLASS, --data.help CLASS, --trainer.callbacks.help CLASS."
    )


def _is_subclass(obj: Any, base: type) -> bool:
    return inspect.isclass(obj) and issubclass(obj, base)


# callbacks a config lists that a command-line override should not silently drop (docs/user_guide.md)
_KEPT_CALLBACKS = {
    "RNGStateCallback": "exact resume",
    "NonFiniteGuard": "the NaN/inf step guard",
    "ExportCallback": "the export",
}


def _short_name(entry: Any) -> str | None:
    class_path = entry.get("class_path") if hasattr(entry, "get") else getattr(entry, "class_path", entry)
    return str(class_path).rpartition(".")[2] if class_path else None


def _config_callbacks(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """The last ``--config`` file that lists ``trainer.callbacks``, and their short class names."""
    found: tuple[str | None, list[str]] = (None, [])
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        try:
            config = yaml.safe_load(Path(value).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # jsonargparse reports unreadable configs itself
        trainer = config.get("trainer") if isinstance(config, dict) else None
        listed = trainer.get("callbacks") if isinstance(trainer, dict) else None
        if isinstance(listed, list):
            found = (value, [n for n in map(_short_name, listed) if n])
    return found


def warn_lost_callbacks(args: Sequence[str], config: Any) -> list[str]:
    """Warn when the parsed ``trainer.callbacks`` lack an exact-resume, NaN-guard or export callback that
    the config file lists (a command-line ``--trainer.callbacks [...]`` replaces the whole list; ``+=``
    appends). Returns the lost class names."""
    path, listed = _config_callbacks(args)
    trainer = config.get("trainer") if hasattr(config, "get") else None
    final = trainer.get("callbacks") if trainer is not None and hasattr(trainer, "get") else None
    kept = {n for n in map(_short_name, final or []) if n}
    lost = [name for name in _KEPT_CALLBACKS if name in listed and name not in kept]
    if lost:
        what = ", ".join(f"{name} ({_KEPT_CALLBACKS[name]})" for name in lost)
        log.warning(
            "the command line's trainer.callbacks dropped %s that %s lists: append with "
            "--trainer.callbacks+=NAME instead of replacing the list, or list them again",
            what,
            path,
        )
    return lost


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


# ------------------------------------------------------------------ nested --<group>.<option>.help
_NESTED_HELP = re.compile(r"^--(model|data)\.([A-Za-z_][A-Za-z0-9_]*)\.help$")


def _configured_class_path(args: Sequence[str], group: str) -> str | None:
    """The ``class_path`` of ``group`` (``model`` or ``data``) the command line picks: the last ``--config``
    file naming one, or a later ``--model CLASS``."""
    class_path = None
    for i, arg in enumerate(args):
        value = None
        if arg in ("--config", f"--{group}") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(("--config=", f"--{group}=")):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        if arg.startswith("--config"):
            try:
                config = yaml.safe_load(Path(value).read_text()) or {}
            except (OSError, yaml.YAMLError) as err:
                raise MoslimError(f"cannot read config {value!r}: {' '.join(str(err).split())}") from None
            section = config.get(group) if isinstance(config, dict) else None
            if isinstance(section, dict) and section.get("class_path"):
                class_path = str(section["class_path"])
        elif not value.lstrip().startswith(("{", "/")) and not value.endswith((".yaml", ".yml")):
            class_path = value
    return class_path


def _resolve_class(class_path: str, group: str) -> type:
    if "." not in class_path:  # a short name, as LightningCLI resolves it among moslim-pl's classes
        class_path = f"moslim_pl.{'modules' if group == 'model' else 'data'}.{class_path}"
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise MoslimError(f"--{group}: cannot import {class_path!r}") from None


def nested_help(args: Sequence[str]) -> str | None:
    """The help text of ``--model.<option>.help`` (or ``--data.<option>.help``): the options of the class
    that a constructor argument of the configured model or datamodule takes (``--model.lora.help``: the
    ``LoRAConfig`` fields). ``None`` when the command line asks for no such help. LightningCLI lists these
    flags in ``--model.help CLASS`` but cannot answer them, since the model's class is only known once
    the command line is parsed."""
    wanted = [m for m in map(_NESTED_HELP.match, args) if m]
    if not wanted:
        return None
    group, option = wanted[0].group(1), wanted[0].group(2)
    class_path = _configured_class_path(args, group)
    if class_path is None:
        raise MoslimError(
            f"--{group}.{option}.help: pick the {group} first (--config FILE or --{group} CLASS)"
        )
    cls = _resolve_class(class_path, group)
    # a policy stage takes its base's options through **kwargs (moslim_pl.modules.policy): the class
    # whose constructor names the option types it
    owner = next((k for k in cls.__mro__ if option in inspect.signature(k.__init__).parameters), None)
    if owner is None:
        raise MoslimError(f"--{group}.{option}.help: {cls.__name__} has no option {option!r}")
    hints = typing.get_type_hints(owner.__init__)
    candidates = [t for t in typing.get_args(hints.get(option)) or (hints.get(option),) if inspect.isclass(t)]
    candidates = [t for t in candidates if t is not type(None) and dataclasses.is_dataclass(t)]
    if not candidates:
        raise MoslimError(
            f"--{group}.{option}.help: {option} of {cls.__name__} is a plain value "
            f"({hints.get(option)}); see moslim-pl fit --{group}.help {cls.__name__}"
        )
    parser = ArgumentParser(
        prog=f"moslim-pl ... --{group}.{option}", description=inspect.getdoc(candidates[0])
    )
    parser.add_class_arguments(candidates[0], nested_key=f"{group}.{option}")
    return parser.format_help()


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


def _close_process_group() -> None:
    """Destroy the default process group a multi-process run created, before the interpreter exits.

    Lightning leaves it alive; gloo's worker threads then meet the interpreter's teardown and the process
    can abort with ``terminate called without an active exception`` (exit -6) after a run that finished.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``moslim-pl`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # per-file progress bars of weight loading and saving would drown the training log
    transformers.utils.logging.disable_progress_bar()
    try:
        help_text = nested_help(sys.argv[1:] if args is None else args)
        if help_text is not None:
            sys.stdout.write(help_text)
            return
        if args is None:  # rewritten in place: LightningCLI warns when given args beside a command line
            sys.argv[1:] = modules.settings.null_field_args(sys.argv[1:])
        MoslimCLI(args=None if args is None else modules.settings.null_field_args(args))
        _close_process_group()
    except Exception as err:
        user_error = _user_error(err)
        if user_error is None or os.environ.get("MOSLIM_DEBUG"):
            raise
        sys.stderr.write(f"moslim-pl: error: {user_error}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
