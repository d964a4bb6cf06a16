"""Atomic writes: an export, a checkpoint or a results file is either the complete new one or the previous
one, never half of each."""

from __future__ import annotations

import ctypes
import errno as errno_codes
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from torch import nn

_STAGING = ".{name}.tmp-{pid}-"
_BACKUP = ".{name}.old-{pid}-"


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a staging folder next to ``folder``; on success it replaces ``folder`` in one rename.

    A failure (or a kill) while writing leaves any previous ``folder`` untouched. The staging folder is
    a hidden ``.<name>.tmp-<pid>-*`` sibling: removed on failure; after a kill, removed by the next
    export to the same ``folder`` (its writer is gone). Files are flushed to disk before the rename.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(folder)
    staging = Path(
        tempfile.mkdtemp(prefix=_STAGING.format(name=folder.name, pid=os.getpid()), dir=folder.parent)
    )
    # mkdtemp makes the folder private (0700); an export is a normal folder, readable as the umask allows
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        for file in staging.rglob("*"):
            if file.is_file():
                _fsync(file)
        _replace_folder(staging, folder)
        _fsync(folder.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_siblings(folder: Path) -> None:
    """Remove staging or backup folders of ``folder`` whose writing process no longer runs."""
    for pattern in (_STAGING, _BACKUP):
        prefix = pattern.format(name=folder.name, pid="")[:-1]  # up to the pid
        for sibling in folder.parent.glob(f"{glob.escape(prefix)}*"):
            pid = sibling.name[len(prefix) :].split("-", 1)[0]
            if sibling.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(sibling, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result != 0:
        code = ctypes.get_errno()
        if code in (errno_codes.EINVAL, errno_codes.ENOSYS, errno_codes.EOPNOTSUPP):
            return False  # e.g. a file system without RENAME_EXCHANGE
        raise OSError(code, os.strerror(code), str(b))
    return True


def _replace_folder(staging: Path, folder: Path) -> None:
    """Move the complete ``staging`` folder to ``folder``, removing a previous export only afterwards.

    Where the system can swap two folders atomically, ``folder`` is never missing; elsewhere the old one
    is first renamed to a hidden backup, so a kill between the two renames leaves both folders whole.
    """
    if not folder.exists():
        os.replace(staging, folder)
        return
    if _exchange(staging, folder):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the previous export
        return
    backup = Path(
        tempfile.mkdtemp(prefix=_BACKUP.format(name=folder.name, pid=os.getpid()), dir=folder.parent)
    )
    backup.rmdir()  # only the unique name is wanted; os.replace needs the target absent
    os.replace(folder, backup)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(backup, folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def save_pretrained_atomic(
    folder: str | Path,
    *parts: object,
    fsdp_root: object | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """``part.save_pretrained`` of every part (model, tokenizer, ...) into ``folder``, atomically.

    A model sharded with FSDP is gathered first: every rank must then call this (a collective); in a
    distributed run only rank 0 writes. ``fsdp_root``: the FSDP1 wrapper holding the models, if any
    (``moslim_pl.models.sharding.fsdp1_root``). ``extra(staging)`` writes more files (a model card, an
    adapter folder) into the staging folder before it replaces ``folder``.
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
        if extra is not None:
            extra(staging)
    return Path(folder)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` writing each checkpoint to a hidden temporary file in the target's
    folder, flushed to disk, then renamed over the target: a kill mid-write leaves the previous checkpoint
    whole. (Lightning's own save stages the file in the system's temp folder and moves it, which is a
    copy, not a rename, when that is another file system.) ``moslim-pl`` installs it on every trainer
    whose strategy writes checkpoints through a plain ``TorchCheckpointIO``; pass it as
    ``Trainer(plugins=[AtomicCheckpointIO()])`` in Python. Remote paths (``s3://...``) use Lightning's
    save. Loading is ``torch.load(weights_only=True)`` unless a caller asks otherwise: a checkpoint
    holds tensors and plain Python values only, so no pickled code runs when one is read.
    """

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        kwargs = {} if map_location is None else {"map_location": map_location}  # else Lightning's: CPU
        return super().load_checkpoint(
            path, weights_only=True if weights_only is None else weights_only, **kwargs
        )

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_file(path) as tmp, open(tmp, "wb") as file:
            torch.save(checkpoint, file)


REFUSAL_SHARD = "moslim-no-sequence-classification.safetensors"


def refuse_sequence_classification(folder: str | Path, architecture: str, note: str) -> list[str]:
    """Make ``AutoModelForSequenceClassification.from_pretrained(folder)`` fail instead of silently adding a
    random classification head to the backbone saved in ``folder`` (``AutoModel`` still loads it).

    ``config.json`` gets ``architectures: [architecture]`` and ``moslim_note: note``; the weights get an
    empty (shape ``[0]``) tensor under each name of the backbone family's sequence-classification head
    (``score.weight`` for Llama-like models, ``classifier.*`` for BERT-like ones), so transformers stops
    with a size-mismatch error on that head (unless a caller passes ``ignore_mismatched_sizes=True``).
    ``AutoModel`` reports the extra names as unexpected and ignores them. Returns the names added (none
    when transformers has no sequence-classification class for the backbone: nothing to refuse).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = Path(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["architectures"] = [architecture]
    config["moslim_note"] = note
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    try:
        hf_config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            classifier = AutoModelForSequenceClassification.from_config(hf_config)
    except (ValueError, KeyError, OSError, TypeError):
        return []
    prefix = f"{classifier.base_model_prefix}."
    names = [name for name in classifier.state_dict() if not name.startswith(prefix)]
    if not names:
        return []
    empty = {name: torch.zeros(0) for name in names}
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        with safe_open(single, framework="pt") as file:
            metadata = file.metadata() or {"format": "pt"}
        save_file({**load_file(single), **empty}, single, metadata=metadata)
    elif index.is_file():  # a sharded backbone: one more small shard, listed in the index
        save_file(empty, folder / REFUSAL_SHARD, metadata={"format": "pt"})
        content = json.loads(index.read_text())
        content.setdefault("weight_map", {}).update(dict.fromkeys(names, REFUSAL_SHARD))
        index.write_text(json.dumps(content, indent=2) + "\n")
    else:
        return []
    return names
