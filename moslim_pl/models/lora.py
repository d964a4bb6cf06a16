"""LoRA adapters (PEFT) from YAML: wrap a model, run its adapter-disabled base, merge for export.

A policy with LoRA needs no frozen reference copy: the reference is the same weights with the adapters
switched off (``reference_mode``), which saves a whole model's memory. A reward model puts the adapters
on its backbone only (``task_type="FEATURE_EXTRACTION"``); its heads stay fully trainable.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from moslim_pl.errors import MoslimError
from moslim_pl.models.sharding import full_state_dict


@dataclass
class LoRAConfig:
    """Low-rank adapters on the linear layers named by ``target_modules``.

    Args:
        r: rank of each adapter.
        alpha: scaling numerator (the update is ``alpha / r * B @ A``).
        dropout: dropout on the adapter input. The policy modules keep every model in eval mode (the
            training log-probs must be those of the sampling distribution), so it is inactive there.
        target_modules: module names or suffixes (``q_proj``...), or ``["all-linear"]`` for every linear
            layer except the output head.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_modules:
            raise MoslimError(
                f"lora: need r >= 1, alpha > 0, 0 <= dropout < 1 and target_modules, got {self}"
            )


def apply_lora(model: nn.Module, config: LoRAConfig, task_type: str = "CAUSAL_LM") -> nn.Module:
    """``model`` wrapped with fresh adapters (B = 0, so the output is unchanged); only adapters train.

    ``task_type``: ``"CAUSAL_LM"`` for a policy, ``"FEATURE_EXTRACTION"`` for a bare backbone (``AutoModel``,
    e.g. a reward model's).
    """
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules
    peft_config = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else list(targets),
        task_type=task_type,
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as err:  # e.g. a target module name the model does not have
        raise MoslimError(f"lora: {' '.join(str(err).split())}") from None


def is_lora(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "merge_and_unload")


@contextlib.contextmanager
def reference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its LoRA adapters switched off: the frozen base, i.e. the initial policy."""
    with model.disable_adapter():
        yield model


def merged_copy(model: nn.Module, state: dict[str, Tensor] | None = None) -> nn.Module:
    """A plain model with the adapters merged into the weights (the original keeps its adapters).

    A model sharded with FSDP2 is gathered first (a collective: every rank calls this) into an unsharded
    twin built on the meta device; only rank 0's twin receives the weights (the other ranks write nothing).
    ``state``: the full state dict of ``model`` gathered by the caller (keys relative to ``model``; empty
    on the ranks that write nothing), e.g. a reward model's backbone gathered with the whole RM. Its
    tensors are left as they are (the merge writes new ones), so it may share storage with a live model.
    """
    private = state is None  # gathered here: nobody else holds these tensors, so merge in place
    if state is None:
        state = full_state_dict(model)
    if state is None:
        return copy.deepcopy(model).merge_and_unload()
    from peft import get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM

    config = copy.deepcopy(model.peft_config[model.active_adapter])
    # a policy's twin keeps its LM head; a reward model's backbone (FEATURE_EXTRACTION) has none
    auto = AutoModelForCausalLM if config.task_type == "CAUSAL_LM" else AutoModel
    with torch.device("meta"):
        twin = get_peft_model(auto.from_config(model.get_base_model().config), config)
    if not state:  # not rank 0
        return twin.get_base_model()
    twin.load_state_dict(state, assign=True)
    twin.get_base_model().tie_weights()
    return twin.merge_and_unload(safe_merge=not private)
