"""FSDP2Strategy: Lightning's ModelParallelStrategy for pure FSDP2, sized by the Trainer's devices and nodes.

``ModelParallelStrategy`` builds a 2D mesh (data parallel x tensor parallel) whose default puts every GPU of
a node on the tensor-parallel axis. The moslim modules shard with FSDP2 only, so this strategy puts every
process on the data-parallel axis: ``--trainer.devices`` and ``--trainer.num_nodes`` alone size the run,
each process reads its own share of the data, and the modules' ``configure_model`` shards their models over
that axis. Everything else (sharded or full checkpoints, precision checks, launchers) is Lightning's.
"""

from __future__ import annotations

from datetime import timedelta

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy


class FSDP2Strategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` with ``data_parallel_size`` = world size and ``tensor_parallel_size`` = 1.

    Args:
        save_distributed_checkpoint: ``True``: each rank writes its shard (the checkpoint is a folder,
            resumable on the same or another world size); ``False``: rank 0 writes one full file.
        process_group_backend: ``nccl`` on GPUs, ``gloo`` on CPUs by default.
        timeout: of the collectives.
    """

    def __init__(
        self,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )

    def setup_environment(self) -> None:
        # the parent resolves "auto" to the number of nodes; here every process is a replica
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
