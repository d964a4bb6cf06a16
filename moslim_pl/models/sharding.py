"""Sharding Hugging Face models with FSDP and gathering their full weights back for an export.

Two ways to shard, both on the transformer blocks of the model (the unit that Hugging Face itself never
splits across devices, ``_no_split_modules``):

- FSDP2 (``configs/trainer/fsdp2.yaml``, Lightning's ``ModelParallelStrategy``): the LightningModules call
  :func:`shard_model` in ``configure_model``; ``fully_shard`` wraps every block, then the model's root, so
  one all-gather brings in one block at a time and the root holds what is left (embeddings, final norm,
  heads).
- FSDP1 (``configs/trainer/fsdp.yaml``, Lightning's ``FSDPStrategy``): the strategy wraps the whole
  LightningModule; :class:`TransformerBlockPolicy` tells its auto-wrap (and activation checkpointing)
  which modules are the blocks, whatever the backbone.

:func:`full_state_dict` undoes either for an export: every rank calls it (the weights are all-gathered),
rank 0 receives the full tensors on the CPU and writes the Hugging Face folder.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel, fully_shard
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

log = logging.getLogger(__name__)

_FSDP1_PREFIX = "_fsdp_wrapped_module."
_CHECKPOINT_PREFIX = "_checkpoint_wrapped_module."


def block_classes(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The transformer block classes of ``model`` (e.g. ``LlamaDecoderLayer``), possibly several.

    Read from the ``_no_split_modules`` of every Hugging Face model inside ``model`` (a reward model, a
    PEFT wrapper and a LightningModule all hold one); without any, the class of the longest
    ``nn.ModuleList`` whose entries share one class (the layer list). Empty when neither exists.
    """
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if classes:
        return tuple(sorted(classes, key=lambda c: c.__qualname__))
    layer_lists = [
        m
        for m in model.modules()
        if isinstance(m, nn.ModuleList) and len(m) and len({type(c) for c in m}) == 1
    ]
    return (type(max(layer_lists, key=len)[0]),) if layer_lists else ()


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` was sharded with FSDP2 (``fully_shard``) or wrapped by FSDP1."""
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in module.modules())


def shard_model(model: nn.Module, mesh: Any, **fsdp_kwargs: Any) -> nn.Module:
    """``fully_shard`` every transformer block of ``model``, then ``model`` itself (FSDP2), in place.

    Blocks are sharded innermost first, as ``fully_shard`` requires. A model without blocks (a value
    head) becomes one unit. Idempotent: an already sharded model is returned as is.

    Args:
        model: any module; its parameters move to ``mesh``'s device.
        mesh: a one-dimensional ``DeviceMesh`` over the data-parallel ranks.
        fsdp_kwargs: passed to ``fully_shard`` (``reshard_after_forward``, ``mp_policy``, ...).
    """
    if isinstance(model, FSDPModule):
        return model
    name = type(model).__name__  # before fully_shard swaps the class for an FSDP subclass
    classes = block_classes(model)
    blocks = [m for m in model.modules() if classes and isinstance(m, classes) and m is not model]
    for block in reversed(blocks):  # modules() is pre-order: reversed, children come before parents
        fully_shard(block, mesh=mesh, **fsdp_kwargs)
    fully_shard(model, mesh=mesh, **fsdp_kwargs)
    log.info(
        "sharded %s with FSDP2 over %d ranks: %d blocks (%s) and the root",
        name,
        mesh.size(),
        len(blocks),
        ", ".join(c.__name__ for c in classes) or "none",
    )
    return model


class TransformerBlockPolicy(ModuleWrapPolicy):
    """FSDP1 auto-wrap (and activation checkpointing) policy: one unit per transformer block.

    The blocks are found with :func:`block_classes` on the module being wrapped, so one YAML serves every
    backbone (``FSDPStrategy(auto_wrap_policy=TransformerBlockPolicy())``).
    """

    def __init__(self) -> None:
        super().__init__(())
        self._classes: tuple[type[nn.Module], ...] | None = None

    def _run_policy(
        self, root_module: nn.Module, ignored_modules: set[nn.Module], root_kwargs: dict[str, Any]
    ) -> dict[nn.Module, dict[str, Any]]:
        self._classes = block_classes(root_module)
        if not self._classes:
            log.warning("no transformer blocks found in %s: FSDP wraps only the root", type(root_module))
        return {
            module: copy.copy(root_kwargs)
            for module in root_module.modules()
            if module not in ignored_modules and self._classes and isinstance(module, self._classes)
        }

    def __call__(self, module: nn.Module, recurse: bool, *args: Any, **kwargs: Any) -> bool:
        # The functional form (activation checkpointing) visits the root first, with recurse=True.
        if recurse:
            if self._classes is None:
                self._classes = block_classes(module)
            return True
        return bool(self._classes) and isinstance(module, self._classes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _clean_name(name: str) -> str:
    return name.replace(_FSDP1_PREFIX, "").replace(_CHECKPOINT_PREFIX, "")


def full_state_dict(module: nn.Module, root: nn.Module | None = None) -> dict[str, Tensor] | None:
    """The full CPU state dict of a sharded ``module``, or ``None`` when nothing is sharded.

    A collective: under FSDP every rank must call it; rank 0 gets the tensors, the others an empty dict.

    Args:
        module: the model to export (e.g. a LightningModule's ``rm`` or ``policy``).
        root: the FSDP1 wrapper around the LightningModule that holds ``module`` (Lightning's
            ``FSDPStrategy`` wraps the whole LightningModule: only the root can gather). ``None`` or any
            other module: ``module`` itself is checked for FSDP2 sharding.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if isinstance(root, FullyShardedDataParallel):
        names = {m: _clean_name(name) for name, m in root.named_modules()}
        if module not in names:
            raise ValueError(f"{type(module).__name__} is not inside the FSDP root {type(root).__name__}")
        prefix = names[module] + "." if names[module] else ""
        state = get_model_state_dict(root, options=options)
        return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if any(isinstance(m, FSDPModule) for m in module.modules()):
        return get_model_state_dict(module, options=options)
    return None


def shard_mesh(device_mesh: Any) -> Any:
    """The data-parallel mesh of Lightning's ``ModelParallelStrategy`` (whose 2D mesh names it)."""
    names = getattr(device_mesh, "mesh_dim_names", None) or ()
    if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1:
        raise ValueError(
            "tensor parallelism is not implemented: use FSDP2Strategy (configs/trainer/fsdp2.yaml) or "
            "ModelParallelStrategy with tensor_parallel_size=1"
        )
    return device_mesh["data_parallel"] if "data_parallel" in names else device_mesh


def fsdp1_root(pl_module: nn.Module) -> nn.Module | None:
    """The FSDP1 wrapper that Lightning's ``FSDPStrategy`` put around ``pl_module``, if any."""
    trainer = getattr(pl_module, "_trainer", None)
    model = getattr(getattr(trainer, "strategy", None), "model", None)
    return model if isinstance(model, FullyShardedDataParallel) else None
