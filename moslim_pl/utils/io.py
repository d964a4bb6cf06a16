"""Atomic writes: an export, a checkpoint or a results file is either the complete new one or the previous
one, never half of each. Plain Python (no torch, no Lightning)."""

from __future__ import annotations

import ctypes
import errno as errno_codes
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
