"""Compatibility with Hugging Face transformers' model classes, and the one performance shortcut around them.

Generation (:mod:`moslim_pl.generation`), log-probs (:mod:`moslim_pl.rollout`), PPO's critic and the reward
model call Hugging Face models through these helpers, which ask a model's ``forward`` which arguments it
takes (``position_ids``, ``logits_to_keep``, and the KV cache, named ``past_key_values`` before
transformers 5 and ``cache`` since) instead of assuming one transformers version.

:func:`lean_decoder` is the only place that re-implements part of a transformers class
(``LlamaForCausalLM.forward``) to save time; it is opt-out by construction (it returns ``None`` where it
does not apply) and tested bit for bit against the real forward (``tests/test_rollout.py``).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

log = logging.getLogger(__name__)


def base_model(model: nn.Module) -> nn.Module:
    """The model under PEFT, DDP and FSDP1 wrappers, whose ``forward`` names the real arguments."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


@functools.cache
def accepted_arguments(model_type: type) -> frozenset[str]:
    """Which of ``position_ids``, ``logits_to_keep`` and ``cache`` the forward of ``model_type`` takes (warns once)."""
    optional = {"position_ids", "logits_to_keep", "cache"}
    names = frozenset(inspect.signature(model_type.forward).parameters) & optional
    if "position_ids" not in names:
        log.warning(
            "%s.forward takes no position_ids: left-padded prompts get shifted positions", model_type.__name__
        )
    return names


def cache_name(model: nn.Module) -> str:
    # transformers 5.x renamed the KV cache argument and output field from past_key_values to cache.
    return "cache" if "cache" in accepted_arguments(type(base_model(model))) else "past_key_values"


def forward_kwargs(
    model: nn.Module, attention_mask: Tensor, num_inputs: int, logits_to_keep: int
) -> dict[str, Any]:
    """Mask, position ids of the last ``num_inputs`` columns and, where supported, ``logits_to_keep``."""
    accepted = accepted_arguments(type(base_model(model)))
    kwargs: dict[str, Any] = {"attention_mask": attention_mask}
    if "position_ids" in accepted:
        kwargs["position_ids"] = positions_from_mask(attention_mask)[:, -num_inputs:]
    if "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = logits_to_keep  # 0 keeps every position
    return kwargs


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """``[N, T]`` -> ``[N, T]`` long position ids counted from each row's first real token.

    Left padding would otherwise shift every position of a short row and change its logits.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def lean_decoder(model: nn.Module, lockstep: bool) -> Callable[..., Tensor] | None:
    """A decoding step that calls a Llama model's blocks directly: ``(token [N], cache, position [N, 1],
    mask [N, 1, 1, L] bool or None) -> logits [N, V]``; None where it does not apply.

    ``LlamaForCausalLM.forward`` spends about 0.7 ms per call around its blocks (building the 4-D mask,
    output-capturing and argument wrappers), a fifth of a small model's decoding step on a CPU. The
    blocks, the rotary embedding, the final norm and the LM head run exactly as there, with the boolean
    mask that Hugging Face's SDPA path builds, so the logits are the same bit for bit
    (``tests/test_rollout.py``). Only for Llama models (SmolLM2 is one) with SDPA attention, in one
    process or under DDP (sharded weights need the wrapper's hooks), LoRA adapters included.
    """
    from transformers import LlamaForCausalLM

    base = base_model(model)
    # lockstep: sharded (FSDP1/FSDP2) weights are gathered by hooks on the wrapped forward
    if lockstep or type(base) is not LlamaForCausalLM or base.config._attn_implementation != "sdpa":
        return None
    cache_arg = cache_name(model)
    inner = base.model
    blocks = inner.layers[: base.config.num_hidden_layers]

    def step(token: Tensor, cache: Any, position: Tensor, mask: Tensor | None) -> Tensor:
        hidden = inner.embed_tokens(token[:, None])
        rotary = inner.rotary_emb(hidden, position_ids=position)
        for block in blocks:
            hidden = block(
                hidden,
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                position_embeddings=rotary,
                **{cache_arg: cache},
            )
        return base.lm_head(inner.norm(hidden))[:, -1]

    return step
