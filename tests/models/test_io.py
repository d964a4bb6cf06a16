"""Atomic folder writes: the renamed folder has normal permissions, a failure keeps the old one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moslim_pl.models.io import atomic_folder


def test_atomic_folder_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "export") as staging:
            (staging / "a.txt").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "export").stat().st_mode & 0o777 == 0o755


def test_failed_write_keeps_the_previous_folder(tmp_path: Path) -> None:
    with atomic_folder(tmp_path / "export") as staging:
        (staging / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "export") as staging:
        (staging / "a.txt").write_text("new")
        raise RuntimeError("killed")
    assert (tmp_path / "export" / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
