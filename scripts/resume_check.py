"""Checks that a fit killed with SIGKILL and resumed from ``last.ckpt`` ends with the same ``val/`` scalars.

Runs ``moslim-pl fit`` three times with the same config and overrides: straight through; again, killed with
SIGKILL as soon as ``last.ckpt`` holds step ``--kill_after_step``; and resumed from that ``last.ckpt``.
Short steps (the reward model's take milliseconds) would outrun the polling, so the second run holds still
before step ``--kill_after_step + 1`` (an added callback that sleeps; it draws no random numbers) until the
kill arrives; ``--no_pause`` lets it run on.
Prints each final ``val/`` scalar of the straight and the resumed run, EXACT or DIFF; exits 1 on any
difference. Example (the overrides after ``--`` go to every run)::

    python scripts/resume_check.py --config configs/reward_model/quickstart.yaml --out /tmp/resume_rm -- \
        --seed_everything 7 --trainer.max_steps 40 --trainer.max_epochs null \
        --trainer.val_check_interval 20 --trainer.check_val_every_n_epoch null \
        --trainer.callbacks.monitor null --trainer.callbacks.every_n_train_steps 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from moslim_pl.evaluation.tensorboard import read_scalars

CLI = [sys.executable, "-c", "from moslim_pl.cli import main; main()"]


def _command(config: str, save_dir: Path, extra: list[str], ckpt_path: Path | None = None) -> list[str]:
    command = [*CLI, "fit", "--config", config, *extra, "--trainer.logger.init_args.save_dir", str(save_dir)]
    if ckpt_path is not None:
        command += ["--ckpt_path", str(ckpt_path)]
    return command


def _run(command: list[str], log: Path) -> None:
    with log.open("w") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed with {code}; see {log}")


def _checkpoint_step(path: Path) -> int | None:
    """``global_step`` of a complete checkpoint at ``path``; None while absent or being written."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # absent, or a partly written file
        return None


def _run_and_kill(command: list[str], save_dir: Path, step: int, log: Path, timeout: float) -> Path:
    """Starts ``command``, SIGKILLs it once a ``last.ckpt`` under ``save_dir`` holds ``step``; that file."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        seen: dict[Path, float] = {}
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise SystemExit(f"the run to kill ended by itself ({process.returncode}); see {log}")
                for last in save_dir.glob("**/checkpoints/last.ckpt"):
                    mtime = last.stat().st_mtime
                    if seen.get(last) == mtime:
                        continue
                    found = _checkpoint_step(last)
                    if found is None:
                        continue  # partly written: look again
                    seen[last] = mtime
                    if found >= step:
                        process.send_signal(signal.SIGKILL)
                        process.wait()
                        if found != step:
                            raise SystemExit(f"killed too late: last.ckpt holds step {found}, not {step}")
                        kept = last.with_name(f"last-step{step}.ckpt")
                        shutil.copy2(last, kept)
                        print(f"killed pid {process.pid} with last.ckpt at step {found}")
                        return last
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    raise SystemExit(f"no last.ckpt with step {step} under {save_dir} within {timeout} s")


_PAUSE_MODULE = """
import os, time
from lightning.pytorch import Callback

class PauseAtStep(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == int(os.environ["RESUME_CHECK_PAUSE_AT"]):
            time.sleep(3600)  # last.ckpt of this step is written; wait for the SIGKILL
"""


def _pausing(command: list[str], out: Path, step: int) -> list[str]:
    """``command`` with a callback that stops before step ``step + 1`` (the environment says which)."""
    (out / "resume_check_pause.py").write_text(_PAUSE_MODULE)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(out), os.environ.get("PYTHONPATH")]))
    os.environ["RESUME_CHECK_PAUSE_AT"] = str(step)
    return [*command, "--trainer.callbacks+=resume_check_pause.PauseAtStep"]


def _final_val(save_dir: Path) -> dict[str, float]:
    return {tag: values[-1] for tag, values in read_scalars(save_dir).items() if tag.startswith("val/")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--kill_after_step", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the checkpoint")
    parser.add_argument("--skip_straight", action="store_true", help="reuse <out>/straight from a former run")
    parser.add_argument("--no_pause", action="store_true", help="do not hold the run to kill at the step")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("killed", "resumed") if args.skip_straight else ("straight", "killed", "resumed"):
        shutil.rmtree(out / name, ignore_errors=True)

    started = time.monotonic()
    if not args.skip_straight:
        _run(_command(args.config, out / "straight", extra), out / "straight.log")
        print(f"straight run done in {time.monotonic() - started:.0f} s")
    command = _command(args.config, out / "killed", extra)
    if not args.no_pause:
        command = _pausing(command, out, args.kill_after_step)
    last = _run_and_kill(command, out / "killed", args.kill_after_step, out / "killed.log", args.timeout)
    _run(_command(args.config, out / "resumed", extra, ckpt_path=last), out / "resumed.log")
    print(f"all runs done in {time.monotonic() - started:.0f} s")

    straight, resumed = _final_val(out / "straight"), _final_val(out / "resumed")
    if not straight:
        print("the straight run logged no val/ scalars")
        return 1
    width = max(len(tag) for tag in straight | resumed)
    differ = 0
    for tag in sorted(straight | resumed):
        a, b = straight.get(tag), resumed.get(tag)
        same = a is not None and b is not None and a == b
        differ += not same
        shown = [f"{v!r:>22}" if v is not None else f"{'missing':>22}" for v in (a, b)]
        print(f"{tag:<{width}}  straight {shown[0]}  resumed {shown[1]}  {'EXACT' if same else 'DIFF'}")
    print(f"{differ} of {len(straight | resumed)} val/ scalars differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
