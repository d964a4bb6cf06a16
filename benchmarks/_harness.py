"""What the benchmark scripts share: child subprocesses, runs taking turns step by step, memory readings.

Every measured run is its own subprocess of the script (``--prepare`` writes the spec, ``--run`` measures),
so each peak memory is that run's own; the parent process never imports torch, whose memory would leak
into a child's peak (``ru_maxrss`` survives ``exec``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process: ``moslim_pl.utils.memory``'s measure (no torch import)."""
    from moslim_pl.utils.memory import peak_host_memory_bytes

    return peak_host_memory_bytes()


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Baton:
    """Takes turns with the other runs, one step each, through two pipes (``--baton-in/out``).

    All runs of a repeat live at once and only one of them is inside a step: a busy phase of the shared
    machine slows the steps of all alike. A step runs from taking the baton at its start to the start of
    the next step (or the end of training), so it holds the framework's work between steps too (logging,
    callbacks, the next batch); then the baton passes. Without pipes (one run alone) only the clock runs.
    Once the run before this one has ended (EOF on the pipe), there is no more waiting.
    """

    def __init__(self, fd_in: int | None, fd_out: int | None) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out
        self.seconds: list[float] = []
        self._start: float | None = None

    def step(self) -> None:
        """Call at the start of every step: ends the previous step, passes the baton and waits for it."""
        self.finish()
        if self.fd_in is not None and not os.read(self.fd_in, 1):
            self.fd_in = None  # the other run has finished
        self._start = time.perf_counter()

    def finish(self) -> None:
        """Ends the open step (if any) and passes the baton on."""
        if self._start is None:
            return
        self.seconds.append(time.perf_counter() - self._start)
        self._start = None
        if self.fd_out is not None:
            try:
                os.write(self.fd_out, b"x")
            except BrokenPipeError:
                self.fd_out = None

    def close(self) -> None:
        for fd in (self.fd_in, self.fd_out):
            if fd is not None:
                os.close(fd)
        self.fd_in = self.fd_out = None


def run_script(script: str | Path, args: list[str], timeout: float) -> None:
    """Run ``python SCRIPT ARGS`` to its end; a failure raises with the child's stderr."""
    result = subprocess.run(
        [sys.executable, str(Path(script).resolve()), *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{result.stderr[-4000:]}")


def lockstep(script: str | Path, runs: list[list[str]], timeout: float) -> None:
    """One ``python SCRIPT`` subprocess per argument list, passing a baton around them in a ring (the first
    starts)."""
    pipes = [os.pipe() for _ in runs]  # pipe i: the baton that run i waits for
    procs = []
    for i, extra in enumerate(runs):
        fd_in, fd_out = pipes[i][0], pipes[(i + 1) % len(runs)][1]
        command = [sys.executable, str(Path(script).resolve()), *extra]
        if len(runs) > 1:
            command += [f"--baton-in={fd_in}", f"--baton-out={fd_out}"]
        procs.append(
            subprocess.Popen(
                command, pass_fds=(fd_in, fd_out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for fd_in, fd_out in pipes:  # the children hold their own copies
        os.close(fd_in)
        if fd_out != pipes[0][1]:
            os.close(fd_out)
    os.write(pipes[0][1], b"x")  # the first run takes the first step
    os.close(pipes[0][1])
    failures = []
    for extra, proc in zip(runs, procs, strict=True):
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        if proc.returncode != 0:
            failures.append(f"{extra[0]} failed:\n{stderr[-4000:]}")
    if failures:
        raise RuntimeError("\n".join(failures))


def add_child_arguments(parser: argparse.ArgumentParser, runs: tuple[str, ...], baton: bool = True) -> None:
    """The hidden arguments of the child subprocesses (``--run``, ``--prepare``, ``--spec``, ``--out`` and,
    for runs that take turns, ``--baton-in/out``); :func:`child_main` reads them."""
    parser.add_argument("--run", choices=runs, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    if baton:
        parser.add_argument("--baton-in", type=int, help=argparse.SUPPRESS)
        parser.add_argument("--baton-out", type=int, help=argparse.SUPPRESS)


def child_main(
    args: argparse.Namespace,
    prepare: Callable[[argparse.Namespace, Path], dict[str, Any]],
    run: Callable[[argparse.Namespace, dict[str, Any], Path], dict[str, Any]],
) -> bool:
    """The ``--prepare`` / ``--run`` side of a script: write the spec, or one run's ``result.json``. False
    in the parent process (neither flag)."""
    if not (args.run or args.prepare):
        return False
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    if args.prepare:
        args.spec.write_text(json.dumps(prepare(args, args.spec.parent)))
        return True
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args, json.loads(args.spec.read_text()), args.out)
    (args.out / "result.json").write_text(json.dumps(result))
    return True


def trl_training_args(learning_rate: float, max_steps: int) -> dict[str, Any]:
    """The TRL (transformers ``TrainingArguments``) settings both comparisons share, set to match moslim-pl:
    AdamW from torch at a constant learning rate, no weight decay, gradients clipped at norm 1, fp32, no
    gradient checkpointing, no reports, no checkpoints."""
    return {
        "learning_rate": learning_rate,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "optim": "adamw_torch",
        "max_grad_norm": 1.0,
        "max_steps": max_steps,
        "gradient_checkpointing": False,
        "bf16": False,
        "fp16": False,
        "report_to": "none",
        "save_strategy": "no",
    }
