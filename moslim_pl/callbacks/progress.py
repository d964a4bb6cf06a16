"""Progress of the long passes outside Lightning's loops, and the epoch display of ``max_steps`` runs.

:func:`progress` shows a bar for the controllability sweep, the statistics re-estimation and exports
(``docs/user_guide.md``, "Logs"): a task in the trainer's Rich progress display while it is live, a tqdm
bar otherwise, nothing when the trainer's progress bar is disabled or off rank 0.
:func:`fix_epoch_display` makes Rich's train bar read ``Epoch 3`` instead of ``Epoch 3/-2`` when the
run is bounded by ``max_steps`` (``max_epochs=-1``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


def _enabled(trainer: Any) -> bool:
    bar = getattr(trainer, "progress_bar_callback", None)
    return bar is not None and not bar.is_disabled and bool(getattr(trainer, "is_global_zero", True))


@contextmanager
def progress(trainer: Any, total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """``with progress(trainer, total, "sweep") as advance: ... advance(n)``.

    ``trainer`` may be ``None`` (a module outside a trainer): no bar. The bar goes away when the block
    ends. Reads no RNG and syncs nothing.
    """
    if trainer is None or not _enabled(trainer):
        yield lambda n=1: None
        return
    bar = trainer.progress_bar_callback
    rich = getattr(bar, "progress", None) if isinstance(bar, RichProgressBar) else None
    if rich is not None and rich.live.is_started:
        task = rich.add_task(description, total=total)
        try:
            yield lambda n=1: rich.update(task, advance=n, refresh=True)
        finally:
            rich.remove_task(task)
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, file=sys.stderr) as bar:
        yield bar.update


class _StepRunDescription:
    """Rich's train description without ``/max_epochs - 1`` when ``max_epochs`` is -1 (a ``max_steps``
    run): ``Epoch 3 (max_steps 1200)``."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is None or trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch}"
        if trainer.max_steps is not None and trainer.max_steps > 0:
            text += f" (max_steps {trainer.max_steps})"
        return f"{text:{len(self.validation_description)}}"


def fix_epoch_display(trainer: Any) -> None:
    """Give the trainer's Rich progress bar (Lightning's default where ``rich`` is installed, or a
    configured one) the ``max_steps``-aware description; its settings stay as they are."""
    bar = getattr(trainer, "progress_bar_callback", None)
    if isinstance(bar, RichProgressBar) and not isinstance(bar, _StepRunDescription):
        bar.__class__ = _step_run_class(type(bar))


@cache
def _step_run_class(cls: type) -> type:
    return type(f"StepRun{cls.__name__}", (_StepRunDescription, cls), {})
