"""Atomic writes: exports and checkpoints are whole or previous, after a failure or a SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moslim_pl.utils.checkpoint_io import AtomicCheckpointIO
from moslim_pl.utils.io import _exchange, atomic_folder


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


def test_the_next_export_removes_a_dead_writers_staging_folder(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(child.stdout)  # that process has exited
    stale = tmp_path / f".export.tmp-{dead_pid}-abc"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    mine = tmp_path / f".export.tmp-{os.getpid()}-xyz"  # a live writer's (this process): kept
    mine.mkdir()
    with atomic_folder(tmp_path / "export") as staging:
        (staging / "a.txt").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", mine.name])


def test_replacing_an_export_swaps_it_in_one_step(tmp_path: Path) -> None:
    for text in ("old", "new"):
        with atomic_folder(tmp_path / "export") as staging:
            (staging / "a.txt").write_text(text)
    assert (tmp_path / "export" / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    if sys.platform.startswith("linux"):
        (tmp_path / "b").mkdir()
        assert _exchange(tmp_path / "b", tmp_path / "export")
        assert (tmp_path / "b" / "a.txt").read_text() == "new"


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


_KILLED_WRITER = """
import os, sys, time, torch
from pathlib import Path
out = Path(sys.argv[1])
kind = sys.argv[2]
def stall(*args, **kwargs):
    target = args[1] if len(args) > 1 else kwargs.get("filename") or kwargs.get("f")
    if hasattr(target, "write"):
        target.write(b"x" * 1000)
        target.flush()
    else:
        Path(target).write_bytes(b"x" * 1000)  # a truncated weights file
    print("WRITING", flush=True)
    time.sleep(600)
if kind == "checkpoint":
    from moslim_pl.utils.checkpoint_io import AtomicCheckpointIO
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, out / "last.ckpt")
    torch.save = stall
    io.save_checkpoint({"step": 2}, out / "last.ckpt")
else:
    import transformers.modeling_utils as mu
    from moslim_pl.models.backbone import load_causal_lm, load_tokenizer
    from moslim_pl.models.io import save_pretrained_atomic
    tiny = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    tokenizer = load_tokenizer("moslim/tiny-llama")
    lm = load_causal_lm("moslim/tiny-llama", tokenizer=tokenizer, tiny_config=tiny)
    save_pretrained_atomic(out / "export", lm, tokenizer)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(1.0)
    mu.safe_save_file = stall
    save_pretrained_atomic(out / "export", lm, tokenizer)
"""


def _kill_mid_write(tmp_path: Path, kind: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), kind], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "WRITING"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_kill_mid_checkpoint_leaves_the_previous_one_loadable(tmp_path: Path) -> None:
    _kill_mid_write(tmp_path, "checkpoint")
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 1}
    assert list(tmp_path.glob("*.ckpt")) == [tmp_path / "last.ckpt"]  # the partial file is hidden


def test_a_kill_mid_export_leaves_no_half_written_folder_that_loads(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    _kill_mid_write(tmp_path, "export")
    previous = AutoModelForCausalLM.from_pretrained(tmp_path / "export")  # whole: the first export
    (staging,) = tmp_path.glob(".export.tmp-*")  # the killed writer's, truncated weights
    with pytest.raises(Exception):  # noqa: B017 (safetensors' or transformers' own error)
        AutoModelForCausalLM.from_pretrained(staging)
    with atomic_folder(tmp_path / "export") as new:  # the next export clears it away
        previous.save_pretrained(new)
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
