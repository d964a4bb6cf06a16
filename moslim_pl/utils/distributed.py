"""Which process this is in a distributed run: rank helpers that work with and without torch.distributed."""

from __future__ import annotations

import torch
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_rank_zero() -> bool:
    """Whether this process writes shared files: rank 0 of torch.distributed, or the only process."""
    return rank_and_world()[0] == 0


def any_rank(flag: Tensor, sync: bool = True) -> bool:
    """``flag`` (a bool scalar) OR-ed over all ranks when ``sync`` and torch.distributed runs, else itself."""
    if sync and torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = flag.to(torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag)
