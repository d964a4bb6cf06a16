"""Atomic folder writes: an export is either the complete new one or the previous one, never half of each."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a staging folder next to ``folder``; on success it replaces ``folder`` in one rename.

    A failure (or a kill) while writing leaves any previous ``folder`` untouched and removes the staging
    folder (a kill leaves a hidden ``.<name>.tmp-*`` sibling that no loader reads).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    # mkdtemp makes the folder private (0700); an export is a normal folder, readable as the umask allows
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        _replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_folder(staging: Path, folder: Path) -> None:
    """Move the complete ``staging`` folder to ``folder``, removing a previous export only afterwards."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    backup.rmdir()  # only the unique name is wanted; os.replace needs the target absent
    os.replace(folder, backup)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(backup, folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def save_pretrained_atomic(folder: str | Path, *parts: object, fsdp_root: object | None = None) -> Path:
    """``part.save_pretrained`` of every part (model, tokenizer, ...) into ``folder``, atomically.

    A model sharded with FSDP is gathered first: every rank must then call this (a collective); in a
    distributed run only rank 0 writes. ``fsdp_root``: the FSDP1 wrapper holding the models, if any
    (``moslim_pl.models.sharding.fsdp1_root``).
    """
    from moslim_pl.models.sharding import full_state_dict, is_rank_zero  # torch.distributed, on demand

    states = [
        full_state_dict(part, root=fsdp_root) if isinstance(part, nn.Module) else None for part in parts
    ]
    if not is_rank_zero():
        return Path(folder)
    with atomic_folder(folder) as staging:
        for part, state in zip(parts, states, strict=True):
            if state is None:
                part.save_pretrained(staging)
            else:
                part.save_pretrained(staging, state_dict=state)
    return Path(folder)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
