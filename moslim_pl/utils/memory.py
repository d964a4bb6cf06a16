"""Peak memory of this process: the one measure that ComputeCallback and the benchmarks report."""

from __future__ import annotations

import resource
import sys
from typing import Any


def peak_host_memory_bytes() -> int:
    """Peak resident memory of this process (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory_bytes(device: Any = "cpu") -> int:
    """CUDA's peak allocation on a CUDA ``device``, else the process's peak resident memory."""
    if str(device).startswith("cuda"):
        import torch  # only here: the benchmarks' parent process reads host memory without torch

        return int(torch.cuda.max_memory_allocated(device))
    return peak_host_memory_bytes()
