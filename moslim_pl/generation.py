"""KV-cached sampling of the policy: plain functions (no Lightning).

    batch = encode_prompts(tokenizer, prompts, max_prompt_length, chat_template, dimensions)
    rollout = generate(policy, tokenizer, batch, max_new_tokens=64, num_samples=4)

Shapes: ``B`` prompts, ``k`` samples per prompt, ``N = B * k`` rows (sample ``i`` of prompt ``b`` is row
``b * k + i``), ``P`` prompt tokens (left-padded), ``R`` response tokens, ``V`` vocabulary size.
Prompt encoding is in :mod:`moslim_pl.data.prompt_encoding`, log-probs and rewards of a rollout in
:mod:`moslim_pl.rollout`, KL in :mod:`moslim_pl.losses.kl`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from moslim_pl.data.prompt_encoding import PromptBatch, encode_prompts, resolve_chat_template
from moslim_pl.errors import MoslimError
from moslim_pl.models.compat import (
    accepted_arguments,
    base_model,
    cache_name,
    forward_kwargs,
    lean_decoder,
    positions_from_mask,
)
from moslim_pl.models.sharding import is_sharded
from moslim_pl.utils.distributed import any_rank

# PromptBatch, encode_prompts and resolve_chat_template live in moslim_pl.data.prompt_encoding; they are
# named here too, so that one import serves a whole generation (``moslim_pl.generation.encode_prompts``).
__all__ = ["PromptBatch", "Rollout", "encode_prompts", "generate", "resolve_chat_template"]


class Rollout(NamedTuple):
    """``k`` sampled responses per prompt; ordinary (not inference-mode) tensors on the policy's device."""

    sequences: Tensor
    """[N, P + R] long: prompt then response; tokens after a row's EOS are the pad id."""
    attention_mask: Tensor
    """[N, P + R] long: the prompt's mask, then ``response_mask``."""
    prompt_length: int
    """P: the response starts at this column."""
    response_mask: Tensor
    """[N, R] long, 1 for generated tokens up to and including the row's EOS."""
    responses: list[str]
    """N decoded responses, special tokens skipped."""
    prompt_index: Tensor
    """[N] long, the prompt (row of the :class:`PromptBatch`) of each row."""
    finished: Tensor
    """[N] bool, True where the row emitted EOS (False: cut at ``max_new_tokens``)."""


def _sample_next(
    logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> Tensor:
    """``logits [N, V]`` -> next tokens ``[N]``: greedy at temperature 0, else nucleus sampling."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token once the tokens before it already hold top_p of the mass (the first always stays).
        drop = probs.cumsum(-1) - probs > top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits), without the softmax and
    # the inverse-CDF search of torch.multinomial (-log of an Exp(1) draw is Gumbel-distributed)
    noise = torch.empty_like(logits).exponential_(generator=generator).log_()
    return (logits - noise).argmax(-1)


def _prefill(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, num_samples: int
) -> tuple[Tensor, Any]:
    """Run the prompts once and copy their KV cache to the ``k`` samples: ``[B*k, V]`` logits and cache."""
    out = model(
        input_ids=input_ids, use_cache=True, **forward_kwargs(model, attention_mask, input_ids.shape[1], 1)
    )
    logits, cache = out.logits[:, -1], getattr(out, cache_name(model))
    if num_samples == 1:
        return logits, cache
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(num_samples)  # in place; rows b*k .. b*k+k-1 copy prompt b
        return logits.repeat_interleave(num_samples, 0), cache
    # Legacy tuple caches (some remote-code models): prefill the repeated prompts instead.
    repeated = (t.repeat_interleave(num_samples, 0) for t in (input_ids, attention_mask))
    return _prefill(model, *repeated, 1)


def _sample(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    num_samples: int,
    eos_ids: Tensor,
    pad_token_id: int,
    generator: torch.Generator | None,
    lockstep: bool = False,
) -> tuple[Tensor, Tensor]:
    """The decoding loop: ``tokens [N, R]`` and ``response_mask [N, R]`` (run it without grad).

    ``lockstep``: the model is sharded, and every forward pass all-gathers weights with the other ranks:
    all ranks must stop at the same step, so the early stop waits until every row of every rank is done.
    """
    logits, cache = _prefill(model, input_ids, attention_mask, num_samples)
    cache_arg = cache_name(model)
    accepted = accepted_arguments(type(base_model(model)))
    prompt_mask = attention_mask.repeat_interleave(num_samples, 0)
    rows, width = prompt_mask.shape
    # The mask of every step is a prefix of one preallocated mask (no concatenation per step), and each
    # step's position is the previous one plus 1 (no cumulative sum over the whole mask).
    mask = torch.cat([prompt_mask, prompt_mask.new_ones((rows, max_new_tokens))], dim=1)
    position = positions_from_mask(prompt_mask)[:, -1:]
    finished = torch.zeros(rows, dtype=torch.bool, device=mask.device)
    pad = torch.full((rows,), pad_token_id, dtype=torch.long, device=mask.device)
    lean = lean_decoder(model, lockstep)
    # Hugging Face's SDPA path passes no mask when nothing is padded, else this boolean one (True: attend)
    lean_mask = None if bool(prompt_mask.all()) else mask.bool()[:, None, None, :]
    tokens, alive = [], []
    for step in range(max_new_tokens):
        token = _sample_next(logits, temperature, top_p, generator)
        token = torch.where(finished, pad, token)
        tokens.append(token)
        alive.append(~finished)
        finished = finished | (token[:, None] == eos_ids).any(-1)
        if step == max_new_tokens - 1 or not any_rank(~finished.all(), lockstep):
            break
        # Finished rows keep decoding pad tokens (cheaper than compacting the cache); they are masked.
        position = position + 1
        if lean is not None:
            logits = lean(
                token, cache, position, None if lean_mask is None else lean_mask[..., : width + step + 1]
            )
            continue
        kwargs: dict[str, Any] = {"attention_mask": mask[:, : width + step + 1]}
        if "position_ids" in accepted:
            kwargs["position_ids"] = position
        if "logits_to_keep" in accepted:
            kwargs["logits_to_keep"] = 1
        out = model(input_ids=token[:, None], use_cache=True, **{cache_arg: cache}, **kwargs)
        logits, cache = out.logits[:, -1], getattr(out, cache_arg)
    return torch.stack(tokens, 1), torch.stack(alive, 1).long()


def _eos_ids(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, eos_token_id: int | Sequence[int] | None
) -> list[int]:
    if eos_token_id is None:
        # Chat models often end a turn with a token other than the tokenizer's eos (Llama 3's <|eot_id|>):
        # the generation config lists those, as model.generate would use them.
        config = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_token_id = [*([] if config is None else [config] if isinstance(config, int) else config)]
        if tokenizer.eos_token_id is not None:
            eos_token_id.append(tokenizer.eos_token_id)
    ids = [eos_token_id] if isinstance(eos_token_id, int) else sorted(set(eos_token_id))
    if not ids:
        raise MoslimError("generate() needs an eos token: the tokenizer and generation config have none")
    return ids


def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: PromptBatch,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample ``num_samples`` responses per prompt with a KV cache, prefilling each prompt once.

    Sample ``i`` of prompt ``b`` is row ``b * num_samples + i``. A row stops at its first EOS; later
    columns hold ``pad_token_id`` and are masked. The loop ends once every row has stopped, so
    ``R <= max_new_tokens``. The model runs in eval mode (restored afterwards) so that dropout does not
    perturb the sampling distribution.

    Args:
        model: a causal LM (``load_causal_lm``), possibly PEFT-wrapped; unwrap DDP/FSDP first.
        tokenizer: decodes ``responses``; supplies the default eos and pad ids.
        prompts: :func:`encode_prompts` output, moved to the model's device here.
        temperature: 0 decodes greedily.
        top_p: nucleus sampling mass (1 keeps the whole distribution).
        eos_token_id: id(s) ending a response; default: the generation config's and the tokenizer's.
        pad_token_id: filler after EOS; default: the tokenizer's pad id.
        generator: RNG for the sampling; default: torch's global RNG (``torch.manual_seed``).

    Returns:
        :class:`Rollout` of ordinary tensors (usable in a later autograd graph).
    """
    if max_new_tokens < 1 or num_samples < 1:
        raise MoslimError(f"max_new_tokens and num_samples must be >= 1, got {max_new_tokens}, {num_samples}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise MoslimError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    device = next(model.parameters()).device
    input_ids, attention_mask = (t.to(device) for t in prompts)
    eos_ids = torch.tensor(_eos_ids(model, tokenizer, eos_token_id), device=device)
    was_training = model.training
    model.eval()
    sharded = is_sharded(model)
    # FSDP2 keeps the buffers of the weights it gathers in the first forward pass: made under inference
    # mode, they could never serve a forward pass with grad again (and one rank's FSDP2 fails outright).
    try:
        with torch.inference_mode(not sharded), torch.no_grad():
            tokens, response_mask = _sample(
                model, input_ids, attention_mask, max_new_tokens, temperature, top_p, num_samples,
                eos_ids, pad_token_id, generator, lockstep=sharded,
            )  # fmt: skip
    finally:
        model.train(was_training)
    # clone() outside inference mode: inference tensors cannot be saved for backward, and the policy
    # loss embeds these ids and multiplies by these masks.
    tokens, response_mask = tokens.clone(), response_mask.clone()
    prompt_ids = input_ids.repeat_interleave(num_samples, 0)
    prompt_mask = attention_mask.repeat_interleave(num_samples, 0)
    finished = (torch.isin(tokens, eos_ids) & response_mask.bool()).any(-1)
    kept = [row[m.bool()].tolist() for row, m in zip(tokens.cpu(), response_mask.cpu(), strict=True)]
    return Rollout(
        sequences=torch.cat([prompt_ids, tokens], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask], dim=1),
        prompt_length=input_ids.shape[1],
        response_mask=response_mask,
        responses=tokenizer.batch_decode(kept, skip_special_tokens=True),
        prompt_index=torch.arange(input_ids.shape[0], device=device).repeat_interleave(num_samples),
        finished=finished,
    )
